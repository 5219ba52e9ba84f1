/* evr-test: timeout=300 */
/* tests/test_wheel.c: the timer wheel as a pure data structure.
 *
 * Time is injected: no loop, no clock. The unit tests pin down the contract
 * of timers/wheel.h; the model test replays seeded random start, stop,
 * restart and advance sequences (including jumps of years and timeouts
 * beyond the wheel's range) against a naive reference and checks the
 * wheel's invariants after every step. EVR_TEST_SEED overrides the seed.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "helpers.h"
#include "timers/wheel.h"

#define HOUR_MS UINT64_C(3600000)
#define DAY_MS (24 * HOUR_MS)
#define YEAR_MS (365 * DAY_MS)

static struct evr__wheel wheel;
/* Ticks of 2^wheel_shift time units: the unit tests use 1 (each unit its
 * own tick, as if the wheel ran in whole ticks); the model test also runs
 * with coarser ticks, where due times within a tick must still come out
 * exact and in order. */
static unsigned wheel_shift;

static void check(struct evr__wheel *w) {
  int line = evr__wheel_check(w);
  if (line) fail_msg("wheel invariant broken at timers/wheel.c:%d", line);
}

/* Pop everything that is ready; returns how many, storing node pointers. */
static int drain(struct evr__wheel *w, struct evr__tnode **out, int max) {
  int n = 0;
  struct evr__tnode *p;
  while ((p = evr__wheel_pop(w)) != NULL) {
    assert_true(n < max);
    out[n++] = p;
    check(w);
  }
  return n;
}

static void test_wheel_empty_wheel_has_no_next_and_pops_nothing(void **state) {
  (void)state;
  evr__wheel_init(&wheel, 1000, wheel_shift);
  assert_true(evr__wheel_next(&wheel) == UINT64_MAX);
  assert_null(evr__wheel_pop(&wheel));
  evr__wheel_advance(&wheel, 5 * YEAR_MS);
  assert_null(evr__wheel_pop(&wheel));
  assert_true(wheel.now == 5 * YEAR_MS);
  check(&wheel);
}

static void test_wheel_node_expires_exactly_at_its_due_time(void **state) {
  (void)state;
  uint64_t dues[] = {1, 63, 64, 65, 4095, 4096, 4097, 300000, HOUR_MS,
                     DAY_MS, YEAR_MS, 3 * YEAR_MS};
  for (size_t i = 0; i < sizeof dues / sizeof dues[0]; i++) {
    struct evr__tnode n;
    uint64_t base = 12345;
    evr__wheel_init(&wheel, base, wheel_shift);
    evr__tnode_init(&n, 0);
    evr__wheel_add(&wheel, &n, base + dues[i]);
    check(&wheel);
    assert_true(evr__wheel_next(&wheel) <= base + dues[i]);
    evr__wheel_advance(&wheel, base + dues[i] - 1);
    check(&wheel);
    assert_null(evr__wheel_pop(&wheel));
    assert_true(evr__tnode_pending(&n));
    evr__wheel_advance(&wheel, base + dues[i]);
    check(&wheel);
    assert_ptr_equal(evr__wheel_pop(&wheel), &n);
    assert_false(evr__tnode_pending(&n));
    assert_null(evr__wheel_pop(&wheel));
    assert_true(evr__wheel_next(&wheel) == UINT64_MAX);
  }
}

static void test_wheel_equal_deadlines_expire_in_start_order(void **state) {
  (void)state;
  /* a is filed at a high level long before; b joins at a lower level later,
   * e is pushed back to the same due time (it stays in its old slot, behind
   * the others), then c and d start. Cascading and re-filing append nodes
   * behind younger ones; the expiry order must still be start order. */
  struct evr__tnode a, b, c, d, e;
  struct evr__tnode *out[8];
  evr__tnode_init(&a, 0);
  evr__tnode_init(&b, 0);
  evr__tnode_init(&c, 0);
  evr__tnode_init(&d, 0);
  evr__tnode_init(&e, 0);
  evr__wheel_init(&wheel, 0, wheel_shift);
  evr__wheel_add(&wheel, &e, 299995);
  evr__wheel_add(&wheel, &a, 300000);
  evr__wheel_advance(&wheel, 299000);
  evr__wheel_add(&wheel, &b, 300000);
  evr__wheel_advance(&wheel, 299990);
  unsigned where = e.where;
  evr__wheel_add(&wheel, &e, 300000);
  assert_int_equal(e.where, where);
  evr__wheel_add(&wheel, &c, 300000);
  evr__wheel_add(&wheel, &d, 300000);
  check(&wheel);
  evr__wheel_advance(&wheel, 400000);
  assert_int_equal(drain(&wheel, out, 8), 5);
  assert_ptr_equal(out[0], &a);
  assert_ptr_equal(out[1], &b);
  assert_ptr_equal(out[2], &e);
  assert_ptr_equal(out[3], &c);
  assert_ptr_equal(out[4], &d);
}

static void test_wheel_jump_expires_in_due_then_start_order(void **state) {
  (void)state;
  struct evr__tnode n[6];
  struct evr__tnode *out[8];
  uint64_t dues[6] = {5000, 70, 5000, 2 * YEAR_MS, 70, 3 * YEAR_MS};
  evr__wheel_init(&wheel, 0, wheel_shift);
  for (int i = 0; i < 6; i++) {
    evr__tnode_init(&n[i], 0);
    evr__wheel_add(&wheel, &n[i], dues[i]);
  }
  check(&wheel);
  evr__wheel_advance(&wheel, 10 * YEAR_MS);
  check(&wheel);
  assert_int_equal(drain(&wheel, out, 8), 6);
  struct evr__tnode *want[6] = {&n[1], &n[4], &n[0], &n[2], &n[3], &n[5]};
  for (int i = 0; i < 6; i++) assert_ptr_equal(out[i], want[i]);
}

static void test_wheel_pushing_a_node_later_only_rewrites_it(void **state) {
  (void)state;
  struct evr__tnode n;
  evr__tnode_init(&n, 0);
  evr__wheel_init(&wheel, 0, wheel_shift);
  evr__wheel_add(&wheel, &n, 100);
  unsigned where = n.where;
  for (uint64_t due = 101; due < 5000; due += 7) {
    evr__wheel_add(&wheel, &n, due);
    assert_int_equal(n.where, where); /* not moved */
    check(&wheel);
  }
  uint64_t due = n.due;
  /* Reaching the old slot re-files the node; it still expires exactly. */
  for (uint64_t t = 100; t < due; t = evr__wheel_next(&wheel)) {
    evr__wheel_advance(&wheel, t);
    check(&wheel);
    assert_null(evr__wheel_pop(&wheel));
  }
  evr__wheel_advance(&wheel, due - 1);
  assert_null(evr__wheel_pop(&wheel));
  evr__wheel_advance(&wheel, due);
  assert_ptr_equal(evr__wheel_pop(&wheel), &n);
}

static void test_wheel_pulling_a_node_earlier_refiles_it(void **state) {
  (void)state;
  struct evr__tnode n;
  evr__tnode_init(&n, 0);
  evr__wheel_init(&wheel, 0, wheel_shift);
  evr__wheel_add(&wheel, &n, HOUR_MS);
  evr__wheel_add(&wheel, &n, 50);
  check(&wheel);
  assert_true(evr__wheel_next(&wheel) == 50);
  evr__wheel_advance(&wheel, 50);
  assert_ptr_equal(evr__wheel_pop(&wheel), &n);
  assert_null(evr__wheel_pop(&wheel));
}

static void test_wheel_stop_removes_node_and_is_idempotent(void **state) {
  (void)state;
  struct evr__tnode a, b;
  evr__tnode_init(&a, 0);
  evr__tnode_init(&b, 0);
  evr__wheel_init(&wheel, 0, wheel_shift);
  evr__wheel_del(&wheel, &a); /* never started */
  evr__wheel_add(&wheel, &a, 10);
  evr__wheel_add(&wheel, &b, 10);
  evr__wheel_del(&wheel, &a);
  evr__wheel_del(&wheel, &a);
  check(&wheel);
  assert_int_equal(wheel.count, 1);
  evr__wheel_advance(&wheel, 10);
  assert_ptr_equal(evr__wheel_pop(&wheel), &b);
  assert_null(evr__wheel_pop(&wheel));
  /* Stopping an expired node that was not popped yet drops it. */
  evr__wheel_add(&wheel, &a, 20);
  evr__wheel_add(&wheel, &b, 20);
  evr__wheel_advance(&wheel, 30);
  evr__wheel_del(&wheel, &a);
  check(&wheel);
  assert_ptr_equal(evr__wheel_pop(&wheel), &b);
  assert_null(evr__wheel_pop(&wheel));
  assert_true(evr__wheel_next(&wheel) == UINT64_MAX);
}

static void test_wheel_node_started_due_during_expiry_waits_for_next_advance(
    void **state) {
  (void)state;
  struct evr__tnode a, b;
  evr__tnode_init(&a, 0);
  evr__tnode_init(&b, 0);
  evr__wheel_init(&wheel, 0, wheel_shift);
  evr__wheel_add(&wheel, &a, 5);
  evr__wheel_advance(&wheel, 5);
  assert_ptr_equal(evr__wheel_pop(&wheel), &a);
  /* Restarting itself at "now", or in the past, and starting another. */
  evr__wheel_add(&wheel, &a, 5);
  evr__wheel_add(&wheel, &b, 2);
  check(&wheel);
  assert_null(evr__wheel_pop(&wheel));
  assert_true(evr__wheel_next(&wheel) <= 5);
  evr__wheel_advance(&wheel, 5); /* same time, next round */
  assert_ptr_equal(evr__wheel_pop(&wheel), &b); /* earlier due first */
  assert_ptr_equal(evr__wheel_pop(&wheel), &a);
  assert_null(evr__wheel_pop(&wheel));
}

static void test_wheel_timeouts_beyond_range_wait_in_overflow_and_expire_exactly(
    void **state) {
  (void)state;
  struct evr__tnode far, farther, near;
  evr__tnode_init(&far, 0);
  evr__tnode_init(&farther, 0);
  evr__tnode_init(&near, 0);
  uint64_t base = 7;
  uint64_t far_due = base + (UINT64_C(1) << 40) + 12345;
  uint64_t farther_due = base + 100 * YEAR_MS + 1;
  evr__wheel_init(&wheel, base, wheel_shift);
  evr__wheel_add(&wheel, &farther, farther_due);
  evr__wheel_add(&wheel, &far, far_due);
  evr__wheel_add(&wheel, &near, base + 10);
  assert_int_equal(far.where, EVR__WN_OVERFLOW);
  check(&wheel);
  /* Step from one next() to the next: each node pops exactly at its due. */
  int popped = 0, steps = 0;
  while (popped < 3) {
    uint64_t t = evr__wheel_next(&wheel);
    assert_true(t != UINT64_MAX);
    assert_true(t > wheel.now);
    evr__wheel_advance(&wheel, t);
    check(&wheel);
    struct evr__tnode *p;
    while ((p = evr__wheel_pop(&wheel)) != NULL) {
      assert_true(p->due == t);
      assert_ptr_equal(p, popped == 0 ? &near : popped == 1 ? &far : &farther);
      popped++;
    }
    assert_true(++steps < 1000); /* jumps, not ticks */
  }
}

static void test_wheel_time_never_goes_backwards(void **state) {
  (void)state;
  struct evr__tnode n;
  evr__tnode_init(&n, 0);
  evr__wheel_init(&wheel, 1000, wheel_shift);
  evr__wheel_add(&wheel, &n, 1010);
  evr__wheel_advance(&wheel, 10);
  assert_true(wheel.now == 1000);
  assert_null(evr__wheel_pop(&wheel));
  evr__wheel_advance(&wheel, 1010);
  assert_ptr_equal(evr__wheel_pop(&wheel), &n);
}

static void test_wheel_next_is_cached_and_tracks_changes(void **state) {
  (void)state;
  struct evr__tnode a, b;
  evr__tnode_init(&a, 0);
  evr__tnode_init(&b, 0);
  evr__wheel_init(&wheel, 0, wheel_shift);
  evr__wheel_add(&wheel, &a, 40);
  assert_true(evr__wheel_next(&wheel) == 40);
  assert_true(wheel.next_valid);
  evr__wheel_add(&wheel, &b, 20);
  assert_true(evr__wheel_next(&wheel) == 20);
  evr__wheel_del(&wheel, &b);
  assert_true(evr__wheel_next(&wheel) == 40);
  evr__wheel_add(&wheel, &b, 4000); /* level 1: the slot start is a bound */
  evr__wheel_del(&wheel, &a);
  uint64_t next = evr__wheel_next(&wheel);
  assert_true(next <= 4000 && next > 0);
  check(&wheel);
}

/* Many nodes due within one tick (coarse ticks, as the loop uses) expire
 * in exact due order, equal due times in start order, whether the tick is
 * collected when it is over or while it is current. */
static void test_wheel_many_nodes_within_one_tick_expire_in_exact_order(
    void **state) {
  (void)state;
  enum { N = 1000 };
  static struct evr__tnode n[N];
  for (int pass = 0; pass < 2; pass++) {
    wheel_shift = 20;
    uint64_t base = UINT64_C(5) << 20; /* a tick boundary */
    evr__wheel_init(&wheel, base - 3, wheel_shift);
    unsigned r = 12345;
    for (int i = 0; i < N; i++) {
      r = r * 1103515245u + 12345u;
      evr__tnode_init(&n[i], 0);
      /* Within tick 5 (and some in tick 6), many equal due times. */
      uint64_t off = (uint64_t)((r >> 8) % 1500000u) / 7 * 7;
      evr__wheel_add(&wheel, &n[i], base + off);
    }
    check(&wheel);
    /* pass 0: jump past both ticks; pass 1: stop inside tick 5 first. */
    if (pass == 1) {
      evr__wheel_advance(&wheel, base + 500000);
      const struct evr__tnode *prev = NULL, *p;
      while ((p = evr__wheel_pop(&wheel)) != NULL) {
        assert_true(p->due <= base + 500000);
        if (prev)
          assert_true(prev->due < p->due ||
                      (prev->due == p->due && prev->seq < p->seq));
        prev = p;
        check(&wheel);
      }
    }
    evr__wheel_advance(&wheel, base + 2000000);
    const struct evr__tnode *prev = NULL, *p;
    size_t popped = 0;
    while ((p = evr__wheel_pop(&wheel)) != NULL) {
      if (prev)
        assert_true(prev->due < p->due ||
                    (prev->due == p->due && prev->seq < p->seq));
      prev = p;
      popped++;
    }
    check(&wheel);
    assert_int_equal(wheel.count, 0);
    assert_true(popped > 0);
  }
  wheel_shift = 0;
}

/* ---- randomized comparison with a reference model ---- */

#define MODEL_TIMERS 384

struct model_timer {
  struct evr__tnode node;
  int active;
  int late;        /* started already due: not eligible until an advance */
  int fresh;       /* provisional due time, not settled yet */
  uint64_t due;
  uint64_t seq;
};

static struct model_timer mt[MODEL_TIMERS];
static uint64_t model_seq;
static uint64_t rng_state;

static uint64_t rnd(void) { /* splitmix64 */
  uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}
static uint64_t rnd_below(uint64_t n) { return n ? rnd() % n : 0; }

static uint64_t random_delta(void) {
  switch (rnd_below(10)) {
  case 0: return 0;
  case 1: return 1;
  case 2: case 3: return rnd_below(64);
  case 4: return rnd_below(5000);
  case 5: return rnd_below(300000);
  case 6: return rnd_below(HOUR_MS * 30);
  case 7: return rnd_below(30 * DAY_MS);
  case 8: return rnd_below(4 * YEAR_MS);          /* up to beyond 2^36 ms */
  default: return rnd_below(UINT64_C(1) << 44);   /* far beyond the range */
  }
}

/* Fresh starts, in the order they became fresh (evr__wheel_add_fresh). */
static int fresh_order[MODEL_TIMERS * 8];
static int nfresh_order;

static void model_start(struct model_timer *t, uint64_t due) {
  evr__wheel_add(&wheel, &t->node, due);
  t->active = 1;
  t->fresh = 0;
  t->due = due;
  t->seq = model_seq++;
  t->late = due <= wheel.now;
}

/* A start whose due time is settled later by a common shift; it takes its
 * start order at the settle, in the order the timers became fresh. */
static void model_start_fresh(struct model_timer *t, uint64_t due) {
  assert_int_equal(evr__wheel_add_fresh(&wheel, &t->node, due), 0);
  if (!t->fresh) {
    assert_true(nfresh_order < (int)(sizeof fresh_order / sizeof fresh_order[0]));
    fresh_order[nfresh_order++] = (int)(t - mt);
  }
  t->active = 1;
  t->fresh = 1;
  t->due = due;
  t->late = 0;
}

static void model_settle(uint64_t shift) {
  evr__wheel_settle(&wheel, shift);
  for (int i = 0; i < nfresh_order; i++) {
    struct model_timer *t = &mt[fresh_order[i]];
    if (!t->fresh) continue;
    t->fresh = 0;
    t->due += shift;
    t->seq = model_seq++;
  }
  nfresh_order = 0;
}

static void model_stop(struct model_timer *t) {
  evr__wheel_del(&wheel, &t->node);
  t->active = 0;
  t->fresh = 0;
}

static void model_any_start(struct model_timer *t, uint64_t due) {
  if (due > wheel.now && rnd_below(3) == 0)
    model_start_fresh(t, due);
  else
    model_start(t, due);
}

static struct model_timer *model_expected_pop(void) {
  struct model_timer *best = NULL;
  for (int i = 0; i < MODEL_TIMERS; i++) {
    struct model_timer *t = &mt[i];
    if (!t->active || t->late || t->due > wheel.now) continue;
    assert_false(t->fresh);
    if (!best || t->due < best->due ||
        (t->due == best->due && t->seq < best->seq))
      best = t;
  }
  return best;
}

static void model_verify(void) {
  check(&wheel);
  size_t active = 0;
  uint64_t min_due = UINT64_MAX;
  for (int i = 0; i < MODEL_TIMERS; i++) {
    if (!mt[i].active) {
      assert_false(evr__tnode_pending(&mt[i].node));
      continue;
    }
    active++;
    assert_true(evr__tnode_pending(&mt[i].node));
    assert_true(mt[i].node.due == mt[i].due);
    if (mt[i].due < min_due) min_due = mt[i].due;
  }
  assert_int_equal(wheel.count, active);
  uint64_t next = evr__wheel_next(&wheel);
  assert_true(next <= min_due);                 /* a lower bound */
  if (min_due == UINT64_MAX) assert_true(next == UINT64_MAX);
  if (min_due > wheel.now) assert_true(next > wheel.now);
  if (min_due <= wheel.now) assert_true(next <= wheel.now);
}

static struct model_timer *random_timer(void) {
  return &mt[rnd_below(MODEL_TIMERS)];
}

static uint64_t random_due(const struct model_timer *t) {
  uint64_t r = rnd_below(10);
  if (r == 0 && wheel.now > 0)
    return wheel.now - rnd_below(wheel.now < 100 ? wheel.now : 100); /* past */
  if (r <= 5 && t->active)
    return t->due + random_delta(); /* pushed later: the lazy path */
  return wheel.now + random_delta();
}

static void model_advance(void) {
  /* Mostly small steps, sometimes to exactly next(), rarely a jump of
   * hours, years or beyond the wheel's range. */
  uint64_t target, r = rnd_below(100);
  if (r < 20) {
    uint64_t next = evr__wheel_next(&wheel);
    target = next == UINT64_MAX ? wheel.now : next;
  } else if (r < 70) {
    target = wheel.now + rnd_below(100);
  } else if (r < 95) {
    target = wheel.now + rnd_below(300000);
  } else if (r < 98) {
    target = wheel.now + rnd_below(30 * HOUR_MS);
  } else {
    target = wheel.now + random_delta();
  }
  if (target < wheel.now) target = wheel.now;
  /* The loop settles fresh starts before it advances. */
  model_settle(rnd_below(2) ? 0 : rnd_below(100));
  evr__wheel_advance(&wheel, target);
  for (int i = 0; i < MODEL_TIMERS; i++) mt[i].late = 0;
  check(&wheel);
  int leave_some = rnd_below(20) == 0;
  for (;;) {
    struct model_timer *want = model_expected_pop();
    if (leave_some && rnd_below(3) == 0) break;
    struct evr__tnode *got = evr__wheel_pop(&wheel);
    if (!want) {
      assert_null(got);
      break;
    }
    if (got != &want->node)
      fail_msg("pop: got %p, want timer %d (due %" PRIu64 " seq %" PRIu64 ")",
               (void *)got, (int)(want - mt), want->due, want->seq);
    assert_true(got->due <= wheel.now);
    want->active = 0;
    /* Callbacks restart themselves, start, restart or stop others. */
    switch (rnd_below(10)) {
    case 0: model_start(want, wheel.now); break;
    case 1: model_any_start(want, wheel.now + random_delta()); break;
    case 2: model_stop(random_timer()); break;
    case 3: {
      struct model_timer *o = random_timer();
      model_any_start(o, random_due(o));
      break;
    }
    default: break;
    }
    check(&wheel);
  }
}

static void test_wheel_matches_sorted_reference_model_over_random_operations(
    void **state) {
  (void)state;
  uint64_t seed = UINT64_C(0x5eed0001);
  const char *env = getenv("EVR_TEST_SEED");
  if (env && *env) seed = strtoull(env, NULL, 0);
  printf("[ wheel    ] model seed %" PRIu64 " (set EVR_TEST_SEED to replay)\n",
         seed);
  fflush(stdout);
  rng_state = seed;
  static const unsigned shifts[] = {0, 6, 20};
  for (size_t k = 0; k < sizeof shifts / sizeof shifts[0]; k++) {
    wheel_shift = shifts[k];
    model_seq = 0;
    nfresh_order = 0;
    evr__wheel_init(&wheel, rnd_below(UINT64_C(1) << 40), wheel_shift);
    memset(mt, 0, sizeof mt);
    for (int i = 0; i < MODEL_TIMERS; i++) evr__tnode_init(&mt[i].node, 0);

    const int steps = 100000;
    for (int step = 0; step < steps; step++) {
      uint64_t op = rnd_below(100);
      struct model_timer *t = random_timer();
      if (op < 55)
        model_any_start(t, random_due(t));
      else if (op < 75)
        model_stop(t);
      else
        model_advance();
      model_verify();
      /* Keep far below 2^63. */
      if (wheel.now > (UINT64_C(1) << 60)) {
        for (int i = 0; i < MODEL_TIMERS; i++) model_stop(&mt[i]);
        nfresh_order = 0;
        evr__wheel_init(&wheel, 0, wheel_shift);
      }
    }
    for (int i = 0; i < MODEL_TIMERS; i++) model_stop(&mt[i]);
    check(&wheel);
    assert_int_equal(wheel.count, 0);
  }
  wheel_shift = 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_wheel_empty_wheel_has_no_next_and_pops_nothing),
      cmocka_unit_test(test_wheel_node_expires_exactly_at_its_due_time),
      cmocka_unit_test(test_wheel_equal_deadlines_expire_in_start_order),
      cmocka_unit_test(test_wheel_jump_expires_in_due_then_start_order),
      cmocka_unit_test(test_wheel_pushing_a_node_later_only_rewrites_it),
      cmocka_unit_test(test_wheel_pulling_a_node_earlier_refiles_it),
      cmocka_unit_test(test_wheel_stop_removes_node_and_is_idempotent),
      cmocka_unit_test(
          test_wheel_node_started_due_during_expiry_waits_for_next_advance),
      cmocka_unit_test(
          test_wheel_timeouts_beyond_range_wait_in_overflow_and_expire_exactly),
      cmocka_unit_test(test_wheel_time_never_goes_backwards),
      cmocka_unit_test(test_wheel_next_is_cached_and_tracks_changes),
      cmocka_unit_test(
          test_wheel_many_nodes_within_one_tick_expire_in_exact_order),
      cmocka_unit_test(
          test_wheel_matches_sorted_reference_model_over_random_operations),
  };
  return cmocka_run_group_tests_name("wheel", tests, NULL, NULL);
}
