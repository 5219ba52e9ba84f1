/* samples/srclimit.h: per-source connection limits for a daemon that
 * accepts connections: at most max_conns open connections per client
 * address, and at most `rate` new connections per second per client
 * address (a token bucket holding at most `rate` tokens, so a burst of
 * `rate` connections is admitted at once, then one every 1/rate s).
 *
 * A source is an IPv4 address (an IPv4-mapped IPv6 address counts as the
 * IPv4 address), or the /64 prefix of an IPv6 address: one host usually
 * has a whole /64 to pick addresses from. Unix-socket clients (any family
 * other than AF_INET and AF_INET6) are not limited.
 *
 * Memory is bounded: the table has a fixed number of entries, allocated by
 * srclimit_new(); nothing is allocated afterwards. An entry whose source
 * has no open connection is "idle"; when a new source needs an entry and
 * none is free, the least recently used idle entry is evicted (counted).
 * An evicted source starts again with a full bucket: a source that comes
 * back after capacity other sources have been seen since its last
 * connection is not remembered, which is the price of the bound.
 *
 * When every entry belongs to a source with open connections, a new source
 * is refused (SRCLIMIT_FULL, counted). Admitting it unlimited instead would
 * let whoever fills the table (capacity open connections from as many
 * sources, cheap with IPv6) switch the limits off for every source after
 * that; refusing keeps the limits, and a table at least as large as the
 * daemon's total connection limit can never be full of busy entries (each
 * busy entry holds an open connection).
 *
 * Use, in a daemon: create the table before the loops start; on each
 * accepted connection, before allocating anything for it, getpeername()
 * and srclimit_admit() (close it unless SRCLIMIT_OK, logging when
 * srclimit_log_due() says so); keep the srclimit_key_t it returns with the
 * connection and pass it to srclimit_release() exactly once when the
 * connection ends, on whatever thread; free the table after the loops.
 *
 * Entries are found by a hash keyed with a random secret drawn per table
 * (getrandom(), else /dev/urandom, else the time and the process id), so a
 * client cannot pick addresses that all land in one chain (SipHash-1-3).
 *
 * Threads: a table made with SRCLIMIT_SHARED has a mutex and may be used
 * from every loop thread of a process at once (admit on the thread that
 * accepts, release on the thread that serves the connection); without it,
 * from one thread only. The daemons use one shared table per process, so
 * the limits hold for the process whatever loop a connection lands on
 * (SO_REUSEPORT spreads one source's connections over every loop).
 * Measured with bench/srclimit.c (bench-srclimit; a shared, busy 2-CPU AMD
 * EPYC VM, gcc -O2 and clang -O2, eleven runs), one admit plus one release,
 * 10,000 sources in a 65,536-entry table: 41-70 ns without the mutex,
 * 48-97 ns with it (one thread: the mutex adds 0-30 ns); two threads doing
 * nothing but that on one shared table, 115-850 ns each (a table each:
 * 40-150 ns). For scale, the getpeername() a daemon makes to know the
 * source costs 350-630 ns, and one loopback connection made, accepted and
 * closed 27-43 us. Even fully contended, the lock costs at most about 3% of
 * a connection, and loops that do anything else rarely meet on it: one
 * table per process, limits that mean what they say whatever loop serves a
 * connection, is worth it.
 */
#ifndef EVR_SAMPLES_SRCLIMIT_H
#define EVR_SAMPLES_SRCLIMIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct srclimit srclimit_t;

/* Why a connection is refused (srclimit_admit()). */
enum srclimit_result {
  SRCLIMIT_OK = 0,    /* admitted: call srclimit_release() when it closes */
  SRCLIMIT_CONNS = 1, /* the source has max_conns open connections */
  SRCLIMIT_RATE = 2,  /* the source's bucket is empty */
  SRCLIMIT_FULL = 3,  /* a new source, and every entry is busy */
  SRCLIMIT_NREASONS = 4
};

/* srclimit_new() flags. */
#define SRCLIMIT_SHARED 1u /* admit/release from several threads (a mutex) */

/* The source of one connection, to hand back to srclimit_release(): plain
 * data, copy it into the connection. family 0: a source that is not
 * limited (release does nothing). */
typedef struct srclimit_key {
  uint64_t addr;  /* IPv4: the address; IPv6: the first 64 bits (host order) */
  uint8_t family; /* 4, 6, or 0 */
} srclimit_key_t;

typedef struct srclimit_stats {
  uint64_t admitted;                   /* connections admitted (limited sources) */
  uint64_t exempt;                     /* connections from sources not limited */
  uint64_t refused[SRCLIMIT_NREASONS]; /* per reason; [SRCLIMIT_OK] stays 0 */
  uint64_t evictions;                  /* idle entries reused for a new source */
  uint64_t stray_releases;             /* releases with no open connection to end */
  uint32_t entries;                    /* entries in use (idle or busy) */
  uint32_t busy;                       /* entries with open connections */
  uint32_t capacity;
} srclimit_stats_t;

/* A table of `capacity` entries (a power of two, 2 to 2^24); max_conns: open
 * connections per source (0: no limit); rate: new connections per second
 * per source, and the burst (0: no limit). flags: 0 or SRCLIMIT_SHARED.
 * Returns NULL with errno set: EINVAL (capacity), ENOMEM, or what
 * pthread_mutex_init() returns. */
srclimit_t *srclimit_new(uint32_t capacity, uint32_t max_conns, uint32_t rate, unsigned flags);
void srclimit_free(srclimit_t *t);

/* The source of a peer address (sa: what accept() or getpeername() wrote). */
srclimit_key_t srclimit_key(const struct sockaddr *sa);

/* May a new connection from sa come in at now_ns (a monotonic clock in
 * nanoseconds: evr_hrtime())? SRCLIMIT_OK, and *key (if not NULL) is the
 * source to release when the connection closes; or the reason it is
 * refused (nothing to release). A clock that goes back (readings of other
 * threads) counts as no time passed. */
int srclimit_admit(srclimit_t *t, const struct sockaddr *sa, uint64_t now_ns,
                   srclimit_key_t *key);
/* The same for a source already computed by srclimit_key(). */
int srclimit_admit_key(srclimit_t *t, const srclimit_key_t *key, uint64_t now_ns);

/* A connection admitted for key has closed. A release with no open
 * connection to end (a caller's bug) changes nothing but a counter. */
void srclimit_release(srclimit_t *t, const srclimit_key_t *key);

/* Should the daemon log the refusal (reason) that just happened? At most
 * once per second per reason: 1 at most once a second, with
 * *suppressed = the refusals of that reason not logged since the last
 * line; 0 otherwise (the refusal is counted as suppressed). */
int srclimit_log_due(srclimit_t *t, int reason, uint64_t now_ns, uint64_t *suppressed);

void srclimit_stats(srclimit_t *t, srclimit_stats_t *out);

/* "open connections", "rate", "table full"; "?" for anything else. */
const char *srclimit_reason_name(int reason);

/* "192.0.2.1" or "2001:db8:1:2::/64" ("unix" for family 0) into buf;
 * returns buf. size 64 is always enough. */
char *srclimit_key_format(const srclimit_key_t *key, char *buf, size_t size);

/* Limits of the command line: source-table-size default, and bounds. */
#define SRCLIMIT_DEFAULT_CAPACITY 65536u
#define SRCLIMIT_MIN_CAPACITY 2u
#define SRCLIMIT_MAX_CAPACITY (1u << 24)

#endif
