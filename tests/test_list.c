/* tests/test_list.c: the intrusive list under the handle and task queues. */
#include "helpers.h"
#include "reactor/list.h"

struct item {
  int v;
  evr__list_t node;
};

static int collect(evr__list_t *head, int *out, int max) {
  int n = 0;
  for (evr__list_t *p = head->next; p != head && n < max; p = p->next)
    out[n++] = EVR_CONTAINER_OF(p, struct item, node)->v;
  return n;
}

static void test_list_insert_keeps_order_and_remove_is_idempotent(void **state) {
  (void)state;
  evr__list_t head;
  struct item it[4];
  evr__list_init(&head);
  assert_true(evr__list_empty(&head));
  for (int i = 0; i < 3; i++) {
    it[i].v = i;
    evr__list_init(&it[i].node);
    assert_false(evr__list_linked(&it[i].node));
    evr__list_insert_tail(&head, &it[i].node);
    assert_true(evr__list_linked(&it[i].node));
  }
  it[3].v = 3;
  evr__list_insert_head(&head, &it[3].node);
  int out[8];
  assert_int_equal(collect(&head, out, 8), 4);
  assert_int_equal(out[0], 3);
  assert_int_equal(out[1], 0);
  assert_int_equal(out[3], 2);
  evr__list_remove(&it[0].node);
  evr__list_remove(&it[0].node);
  assert_false(evr__list_linked(&it[0].node));
  assert_int_equal(collect(&head, out, 8), 3);
  assert_int_equal(out[1], 1);
}

static void test_list_move_splices_everything_and_empties_source(void **state) {
  (void)state;
  evr__list_t a, b;
  struct item it[3];
  evr__list_init(&a);
  evr__list_move(&a, &b);
  assert_true(evr__list_empty(&b));
  for (int i = 0; i < 3; i++) {
    it[i].v = i;
    evr__list_insert_tail(&a, &it[i].node);
  }
  evr__list_move(&a, &b);
  assert_true(evr__list_empty(&a));
  int out[4];
  assert_int_equal(collect(&b, out, 4), 3);
  assert_int_equal(out[2], 2);
  /* A node removed from the moved list leaves it consistent. */
  evr__list_remove(&it[1].node);
  assert_int_equal(collect(&b, out, 4), 2);
  assert_int_equal(out[1], 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_list_insert_keeps_order_and_remove_is_idempotent),
      cmocka_unit_test(test_list_move_splices_everything_and_empties_source),
  };
  return cmocka_run_group_tests_name("list", tests, NULL, NULL);
}
