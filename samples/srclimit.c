/* samples/srclimit.c: see srclimit.h.
 *
 * The table: `capacity` entries and as many chain heads (a bucket is the
 * index of its first entry, NIL if none; an entry links to the next one of
 * its chain). Free entries form a list through `next`; idle entries (no
 * open connection) a doubly linked list from least to most recently used.
 * The bucket of a new source is full when its token count is rate * TOKEN:
 * tokens are kept in units of 1/TOKEN token, so that refilling
 * (elapsed ns * rate / 10^9 tokens) is exact in integers.
 */
#define _GNU_SOURCE
#include "srclimit.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__) && !(defined(EVR_PORTABLE) && EVR_PORTABLE)
#include <sys/random.h>
#define SRCLIMIT_HAVE_GETRANDOM 1
#endif

#define NIL UINT32_MAX
#define TOKEN 1000000000ull   /* one token, in bucket units (see above) */
#define SECOND 1000000000ull  /* ns */

struct entry {
  uint64_t addr;
  uint64_t tokens;  /* in 1/TOKEN tokens */
  uint64_t last_ns; /* when tokens was last refilled */
  uint32_t hash;
  uint32_t conns;
  uint32_t next;            /* chain, or the free list */
  uint32_t older, younger;  /* the idle list, when idle */
  uint8_t family;           /* 0: free */
  uint8_t idle;
};

struct srclimit {
  uint32_t capacity;
  uint32_t max_conns;
  uint32_t rate;
  int shared;
  pthread_mutex_t lock;
  uint64_t k0, k1; /* hash secret */
  uint32_t *buckets;
  struct entry *e;
  uint32_t free_head;
  uint32_t idle_oldest, idle_newest;
  uint32_t used, busy;
  uint64_t admitted, exempt, evictions, stray_releases;
  uint64_t refused[SRCLIMIT_NREASONS];
  uint64_t log_last_ns[SRCLIMIT_NREASONS];
  uint64_t log_suppressed[SRCLIMIT_NREASONS];
  uint8_t log_ever[SRCLIMIT_NREASONS];
};

/* ---- the hash: SipHash-1-3 of two 64-bit words ---- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND \
  do { \
    v0 += v1; \
    v1 = ROTL(v1, 13); \
    v1 ^= v0; \
    v0 = ROTL(v0, 32); \
    v2 += v3; \
    v3 = ROTL(v3, 16); \
    v3 ^= v2; \
    v0 += v3; \
    v3 = ROTL(v3, 21); \
    v3 ^= v0; \
    v2 += v1; \
    v1 = ROTL(v1, 17); \
    v1 ^= v2; \
    v2 = ROTL(v2, 32); \
  } while (0)

static uint64_t siphash13(uint64_t k0, uint64_t k1, uint64_t m0, uint64_t m1) {
  uint64_t v0 = k0 ^ 0x736f6d6570736575ull, v1 = k1 ^ 0x646f72616e646f6dull;
  uint64_t v2 = k0 ^ 0x6c7967656e657261ull, v3 = k1 ^ 0x7465646279746573ull;
  uint64_t m[3] = {m0, m1, (uint64_t)16 << 56}; /* 16 bytes, no tail */
  for (int i = 0; i < 3; i++) {
    v3 ^= m[i];
    SIPROUND;
    v0 ^= m[i];
  }
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

static uint32_t key_hash(const srclimit_t *t, uint64_t addr, uint8_t family) {
  return (uint32_t)siphash13(t->k0, t->k1, addr, family);
}

/* 16 random bytes: getrandom(), /dev/urandom, or the clock and the pid. */
static void random_secret(uint64_t out[2]) {
  size_t got = 0;
  unsigned char *p = (unsigned char *)out;
#ifdef SRCLIMIT_HAVE_GETRANDOM
  while (got < 16) {
    ssize_t n = getrandom(p + got, 16 - got, 0);
    if (n > 0) got += (size_t)n;
    else if (n < 0 && errno == EINTR) continue;
    else break; /* ENOSYS (an old kernel), or anything else */
  }
#endif
  if (got < 16) {
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      while (got < 16) {
        ssize_t n = read(fd, p + got, 16 - got);
        if (n > 0) got += (size_t)n;
        else if (n < 0 && errno == EINTR) continue;
        else break;
      }
      close(fd);
    }
  }
  if (got < 16) {
    struct timespec ts = {0, 0};
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) ts.tv_sec = time(NULL);
    out[0] = ((uint64_t)ts.tv_sec * SECOND + (uint64_t)ts.tv_nsec) ^ 0x9e3779b97f4a7c15ull;
    out[1] = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)out ^ 0xc2b2ae3d27d4eb4full;
  }
}

/* ---- keys ---- */

srclimit_key_t srclimit_key(const struct sockaddr *sa) {
  srclimit_key_t k = {0, 0};
  if (!sa) return k;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    k.family = 4;
    k.addr = ntohl(in->sin_addr.s_addr);
  } else if (sa->sa_family == AF_INET6) {
    const unsigned char *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(b, mapped, 12) == 0) {
      k.family = 4;
      k.addr = (uint64_t)b[12] << 24 | (uint64_t)b[13] << 16 | (uint64_t)b[14] << 8 | b[15];
    } else {
      k.family = 6;
      for (int i = 0; i < 8; i++) k.addr = k.addr << 8 | b[i];
    }
  }
  return k;
}

char *srclimit_key_format(const srclimit_key_t *key, char *buf, size_t size) {
  if (!size) return buf;
  if (key->family == 4) {
    struct in_addr a;
    a.s_addr = htonl((uint32_t)key->addr);
    if (!inet_ntop(AF_INET, &a, buf, (socklen_t)size)) snprintf(buf, size, "?");
  } else if (key->family == 6) {
    struct in6_addr a;
    char text[INET6_ADDRSTRLEN];
    memset(&a, 0, sizeof a);
    for (int i = 0; i < 8; i++) a.s6_addr[i] = (unsigned char)(key->addr >> (56 - 8 * i));
    if (inet_ntop(AF_INET6, &a, text, sizeof text)) snprintf(buf, size, "%s/64", text);
    else snprintf(buf, size, "?");
  } else {
    snprintf(buf, size, "unix");
  }
  return buf;
}

const char *srclimit_reason_name(int reason) {
  switch (reason) {
  case SRCLIMIT_CONNS: return "open connections";
  case SRCLIMIT_RATE: return "rate";
  case SRCLIMIT_FULL: return "table full";
  default: return "?";
  }
}

/* ---- the table ---- */

srclimit_t *srclimit_new(uint32_t capacity, uint32_t max_conns, uint32_t rate, unsigned flags) {
  if (capacity < SRCLIMIT_MIN_CAPACITY || capacity > SRCLIMIT_MAX_CAPACITY ||
      (capacity & (capacity - 1)) || (flags & ~SRCLIMIT_SHARED)) {
    errno = EINVAL;
    return NULL;
  }
  srclimit_t *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->buckets = malloc((size_t)capacity * sizeof *t->buckets);
  t->e = calloc(capacity, sizeof *t->e);
  if (!t->buckets || !t->e) {
    free(t->buckets);
    free(t->e);
    free(t);
    errno = ENOMEM;
    return NULL;
  }
  if (flags & SRCLIMIT_SHARED) {
    int rc = pthread_mutex_init(&t->lock, NULL);
    if (rc) {
      free(t->buckets);
      free(t->e);
      free(t);
      errno = rc;
      return NULL;
    }
    t->shared = 1;
  }
  t->capacity = capacity;
  t->max_conns = max_conns;
  t->rate = rate;
  uint64_t secret[2];
  random_secret(secret);
  t->k0 = secret[0];
  t->k1 = secret[1];
  for (uint32_t i = 0; i < capacity; i++) {
    t->buckets[i] = NIL;
    t->e[i].next = i + 1 < capacity ? i + 1 : NIL;
  }
  t->free_head = 0;
  t->idle_oldest = t->idle_newest = NIL;
  return t;
}

void srclimit_free(srclimit_t *t) {
  if (!t) return;
  if (t->shared) pthread_mutex_destroy(&t->lock);
  free(t->buckets);
  free(t->e);
  free(t);
}

/* A default mutex fails only on misuse (EINVAL, EDEADLK): a bug here. */
static void lock(srclimit_t *t) {
  if (t->shared && pthread_mutex_lock(&t->lock) != 0) abort();
}

static void unlock(srclimit_t *t) {
  if (t->shared && pthread_mutex_unlock(&t->lock) != 0) abort();
}

static void idle_remove(srclimit_t *t, uint32_t i) {
  struct entry *e = &t->e[i];
  if (e->older != NIL) t->e[e->older].younger = e->younger;
  else t->idle_oldest = e->younger;
  if (e->younger != NIL) t->e[e->younger].older = e->older;
  else t->idle_newest = e->older;
  e->idle = 0;
}

static void idle_append(srclimit_t *t, uint32_t i) {
  struct entry *e = &t->e[i];
  e->older = t->idle_newest;
  e->younger = NIL;
  if (t->idle_newest != NIL) t->e[t->idle_newest].younger = i;
  else t->idle_oldest = i;
  t->idle_newest = i;
  e->idle = 1;
}

static uint32_t find(const srclimit_t *t, uint64_t addr, uint8_t family, uint32_t hash) {
  for (uint32_t i = t->buckets[hash & (t->capacity - 1)]; i != NIL; i = t->e[i].next)
    if (t->e[i].addr == addr && t->e[i].family == family) return i;
  return NIL;
}

/* An entry for a new source: a free one, else the least recently used
 * idle one (taken out of its chain); NIL if every entry is busy. */
static uint32_t take_entry(srclimit_t *t) {
  uint32_t i = t->free_head;
  if (i != NIL) {
    t->free_head = t->e[i].next;
    t->used++;
    return i;
  }
  i = t->idle_oldest;
  if (i == NIL) return NIL;
  idle_remove(t, i);
  uint32_t *link = &t->buckets[t->e[i].hash & (t->capacity - 1)];
  while (*link != i) link = &t->e[*link].next;
  *link = t->e[i].next;
  t->evictions++;
  return i;
}

/* Add what the time since e->last_ns earned, up to a full bucket. rate
 * tokens per second and a bucket of rate tokens: a second refills it. */
static void refill(const srclimit_t *t, struct entry *e, uint64_t now_ns) {
  uint64_t full = (uint64_t)t->rate * TOKEN;
  if (now_ns <= e->last_ns) return; /* no time passed (or another thread's clock) */
  uint64_t elapsed = now_ns - e->last_ns;
  e->last_ns = now_ns;
  if (elapsed >= SECOND) {
    e->tokens = full;
    return;
  }
  /* elapsed < 10^9 and rate < 2^32: the product fits in 64 bits. */
  uint64_t earned = elapsed * t->rate; /* in 1/TOKEN tokens, as TOKEN == SECOND */
  e->tokens = full - e->tokens <= earned ? full : e->tokens + earned;
}

static int admit_locked(srclimit_t *t, uint64_t addr, uint8_t family, uint64_t now_ns) {
  uint32_t hash = key_hash(t, addr, family);
  uint32_t i = find(t, addr, family, hash);
  if (i == NIL) {
    i = take_entry(t);
    if (i == NIL) return SRCLIMIT_FULL;
    struct entry *e = &t->e[i];
    e->addr = addr;
    e->family = family;
    e->hash = hash;
    e->conns = 0;
    e->idle = 0;
    e->tokens = (uint64_t)t->rate * TOKEN;
    e->last_ns = now_ns;
    uint32_t *head = &t->buckets[hash & (t->capacity - 1)];
    e->next = *head;
    *head = i;
    idle_append(t, i); /* until it is admitted, below */
  }
  struct entry *e = &t->e[i];
  int reason = SRCLIMIT_OK;
  if (t->max_conns && e->conns >= t->max_conns) {
    reason = SRCLIMIT_CONNS;
  } else if (t->rate) {
    refill(t, e, now_ns);
    if (e->tokens < TOKEN) reason = SRCLIMIT_RATE;
    else e->tokens -= TOKEN;
  }
  if (reason != SRCLIMIT_OK) {
    /* Still in use: an idle source being refused keeps its place. */
    if (e->idle) {
      idle_remove(t, i);
      idle_append(t, i);
    }
    return reason;
  }
  if (e->idle) {
    idle_remove(t, i);
    t->busy++;
  }
  e->conns++;
  return SRCLIMIT_OK;
}

int srclimit_admit_key(srclimit_t *t, const srclimit_key_t *key, uint64_t now_ns) {
  lock(t);
  int reason = SRCLIMIT_OK;
  if (key->family == 0) t->exempt++;
  else reason = admit_locked(t, key->addr, key->family, now_ns);
  if (reason == SRCLIMIT_OK) {
    if (key->family) t->admitted++;
  } else {
    t->refused[reason]++;
  }
  unlock(t);
  return reason;
}

int srclimit_admit(srclimit_t *t, const struct sockaddr *sa, uint64_t now_ns,
                   srclimit_key_t *key) {
  srclimit_key_t k = srclimit_key(sa);
  int reason = srclimit_admit_key(t, &k, now_ns);
  if (key) *key = reason == SRCLIMIT_OK ? k : (srclimit_key_t){0, 0};
  return reason;
}

void srclimit_release(srclimit_t *t, const srclimit_key_t *key) {
  if (key->family == 0) return;
  lock(t);
  uint32_t i = find(t, key->addr, key->family, key_hash(t, key->addr, key->family));
  if (i == NIL || t->e[i].conns == 0) {
    t->stray_releases++;
  } else if (--t->e[i].conns == 0) {
    idle_append(t, i);
    t->busy--;
  }
  unlock(t);
}

int srclimit_log_due(srclimit_t *t, int reason, uint64_t now_ns, uint64_t *suppressed) {
  if (reason <= SRCLIMIT_OK || reason >= SRCLIMIT_NREASONS) return 0;
  lock(t);
  uint64_t last = t->log_last_ns[reason];
  int due = !t->log_ever[reason] || (now_ns >= last && now_ns - last >= SECOND);
  if (due) {
    if (suppressed) *suppressed = t->log_suppressed[reason];
    t->log_suppressed[reason] = 0;
    t->log_last_ns[reason] = now_ns;
    t->log_ever[reason] = 1;
  } else {
    t->log_suppressed[reason]++;
  }
  unlock(t);
  return due;
}

void srclimit_stats(srclimit_t *t, srclimit_stats_t *out) {
  lock(t);
  out->admitted = t->admitted;
  out->exempt = t->exempt;
  for (int r = 0; r < SRCLIMIT_NREASONS; r++) out->refused[r] = t->refused[r];
  out->evictions = t->evictions;
  out->stray_releases = t->stray_releases;
  out->entries = t->used;
  out->busy = t->busy;
  out->capacity = t->capacity;
  unlock(t);
}
