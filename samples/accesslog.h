/* samples/accesslog.h: evr-proxy's access log (--access-log FILE|-): one
 * line per session when it ends, written without ever blocking the loop.
 *
 * Each loop has its own writer (accesslog_t). A line is formatted into the
 * writer's bounded buffer and written later, in batches of whole lines:
 *  - to a regular file (opened O_APPEND) from a deferred task, at most
 *    `chunk` bytes (one write()) per loop iteration; a regular file is
 *    always "ready", so this is what bounds the time one iteration spends;
 *  - to a pipe, FIFO, socket or terminal, made non-blocking, as the
 *    descriptor becomes writable (an I/O watcher), also at most `chunk`
 *    bytes per iteration.
 * When the buffer has no room for a line, the line is dropped and counted.
 *
 * Several loops (threads) may each have a writer on the same path: each
 * opens the file itself with O_APPEND and writes whole lines with one
 * write() per batch, so the lines of different loops never interleave
 * within a line. On a pipe the same holds for batches of at most PIPE_BUF
 * bytes (POSIX makes those writes atomic: 4096 on Linux, 512 on macOS), so
 * a writer on a pipe or FIFO cuts its batches at PIPE_BUF; only a single
 * line longer than PIPE_BUF (possible on macOS) may be split by a short
 * write and meet another writer's line. A short write to a regular file
 * (disk full) can do the same; both are rare and the lines stay in order
 * within each writer.
 *
 * "-" writes to standard output, through a duplicate of descriptor 1. When
 * that is a pipe, making it non-blocking changes the open file description
 * it shares with every other holder (stderr too, after 2>&1, where the
 * daemon's log lines could then meet EAGAIN); give the access log a pipe
 * of its own. The original flags are put back when the writer closes.
 * The process must ignore SIGPIPE (evr-proxy does): a pipe whose reader is
 * gone then fails writes with EPIPE, counted as write errors.
 *
 * Writers are loop-thread objects: every function below is for the thread
 * that runs the writer's loop, except accesslog_request_reopen() and
 * accesslog_counters(), which any thread may call.
 */
#ifndef EVR_SAMPLES_ACCESSLOG_H
#define EVR_SAMPLES_ACCESSLOG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include "evr/evr.h"

/* ---- records ---- */

/* Why a session ended. The numbers and the names are stable: new causes
 * are added at the end, a name is never changed (log consumers match on
 * them). accesslog_cause_name() gives the name. */
typedef enum accesslog_cause {
  ACCESSLOG_DONE = 0,             /* "done": both sides finished (EOF, EOF) */
  ACCESSLOG_CLIENT_RESET,         /* "client-reset": the client reset */
  ACCESSLOG_CLIENT_ERROR,         /* "client-error": another client-side error */
  ACCESSLOG_UPSTREAM_RESET,       /* "upstream-reset": the upstream reset */
  ACCESSLOG_UPSTREAM_ERROR,       /* "upstream-error": another upstream-side error */
  ACCESSLOG_UPSTREAM_REFUSED,     /* "upstream-refused": connect refused */
  ACCESSLOG_UPSTREAM_TIMEOUT,     /* "upstream-timeout": connect timed out */
  ACCESSLOG_UPSTREAM_UNREACHABLE, /* "upstream-unreachable": no route, name not
                                     resolved, or no upstream up */
  ACCESSLOG_IDLE_TIMEOUT,         /* "idle-timeout": no traffic for the idle time */
  ACCESSLOG_DRAIN,                /* "drain": closed by the drain timeout or a
                                     second stop signal */
  ACCESSLOG_HEADER_INVALID,       /* "header-invalid": bad PROXY protocol header */
  ACCESSLOG_HEADER_TIMEOUT,       /* "header-timeout": PROXY header not in time */
  ACCESSLOG_TLS_FAILED,           /* "tls-failed": a TLS handshake failed */
  ACCESSLOG_LOCAL_ERROR,          /* "local-error": out of descriptors or memory */
  ACCESSLOG_NCAUSES
} accesslog_cause_t;

/* The cause's name ("done", "client-reset", ...); "unknown" when out of
 * range. A static string without spaces. */
const char *accesslog_cause_name(accesslog_cause_t cause);

/* The cause for a failed upstream connect with evr status `status`
 * (EVR_ECONNREFUSED: upstream-refused; EVR_ETIMEDOUT: upstream-timeout;
 * EVR_ENETUNREACH, EVR_EHOSTUNREACH, EVR_EAI_*: upstream-unreachable;
 * EVR_EMFILE, EVR_ENFILE, EVR_ENOMEM, EVR_ENOBUFS: local-error; anything
 * else: upstream-error). */
accesslog_cause_t accesslog_cause_connect(int status);

/* The cause for a relay error `status` read on one side (EVR_ECONNRESET:
 * client-reset or upstream-reset; anything else: client-error or
 * upstream-error). */
accesslog_cause_t accesslog_cause_side(int status, int upstream_side);

/* One ended session. Addresses are the caller's; NULL prints as empty. */
typedef struct accesslog_record {
  struct timespec end;       /* wall clock (CLOCK_REALTIME) at the end; all
                                zero: accesslog_write() takes the time now */
  const evr_addr_t *client;  /* the client, or the address its PROXY header
                                gave; NULL: empty */
  const evr_addr_t *upstream;/* the upstream connected to; NULL: empty (none) */
  uint64_t duration_ns;      /* accept to end */
  uint64_t bytes_up;         /* client -> upstream */
  uint64_t bytes_down;       /* upstream -> client */
  accesslog_cause_t cause;
} accesslog_record_t;

/* Line formats. */
enum {
  /* Seven fields separated by one space, in this order, ending in "\n":
   *   TIME CLIENT UPSTREAM DURATION_MS BYTES_UP BYTES_DOWN CAUSE
   *   2026-11-22T10:00:00.123Z 192.0.2.1:51000 10.0.0.2:80 12.345 512 4096 done
   * TIME is UTC with milliseconds (as the daemon's log lines); CLIENT and
   * UPSTREAM as evr_addr_format() writes them ("[::1]:80",
   * "unix:/run/x.sock"), "-" when empty; DURATION_MS in milliseconds with
   * exactly three decimals (microseconds, truncated); BYTES_* decimal;
   * CAUSE one of the cause names. A byte of an address that is not
   * printable ASCII, or is a space, '"' or '\\', is written as \xHH (two
   * lowercase hex digits), so a field never holds a space. */
  ACCESSLOG_TEXT = 0,
  /* One JSON object per line, the same fields in the same order:
   *   {"time":"2026-11-22T10:00:00.123Z","client":"192.0.2.1:51000",
   *    "upstream":"10.0.0.2:80","duration_ms":12.345,"bytes_up":512,
   *    "bytes_down":4096,"cause":"done"}
   * (on one line, without spaces). An empty address is null. Strings are
   * escaped as JSON requires: '"' and '\\' with a backslash, \b \f \n \r \t,
   * other bytes below 0x20 and 0x7f as \u00XX; well-formed UTF-8 is kept
   * as it is, and each byte of a malformed sequence is written as \u00XX
   * (its value taken as a Latin-1 code point), so the line is always valid
   * JSON and valid UTF-8. */
  ACCESSLOG_JSON = 1
};

/* Enough for any line of either format, newline included. */
#define ACCESSLOG_LINE_MAX 2048

/* Format r as one line (with its "\n") in `format` into buf[0..size), NUL-
 * terminated. Returns the length without the NUL; -1 if format is unknown
 * or the line does not fit (ACCESSLOG_LINE_MAX always does). Pure: no I/O,
 * no clock (r->end is used as it is). */
int accesslog_format(const accesslog_record_t *r, int format, char *buf, size_t size);

/* ---- the writer ---- */

/* Options of accesslog_open(); zero-initialise, then set what you need. */
typedef struct accesslog_options {
  const char *path;    /* a file (created 0644 if missing) or "-" (stdout);
                          kept by pointer: it must outlive the writer */
  int format;          /* ACCESSLOG_TEXT or ACCESSLOG_JSON */
  size_t buffer_size;  /* bytes buffered at most; 0: 1 MiB; at least
                          ACCESSLOG_LINE_MAX */
  size_t chunk;        /* bytes one write() takes at most (per iteration);
                          0: 64 KiB */
  unsigned linger_ms;  /* accesslog_close() waits at most this long for a
                          slow pipe to take what is buffered; 0: 1000 */
  /* Where the writer reports its trouble (open, write errors, reopen):
   * daemon.h's log_msg fits, with its levels (0 error, 1 warning, 2 info,
   * 3 debug). NULL: silent. Write errors are reported at most once every
   * 10 s, with the count of those not reported. */
  void (*log)(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
} accesslog_options_t;

/* Counters of a writer (see accesslog_counters()). */
typedef struct accesslog_counters {
  uint64_t lines_written;  /* lines whose last byte was written */
  uint64_t lines_dropped;  /* lines lost: no room in the buffer, a failed
                              write, or still buffered when the writer
                              closed after its linger time */
  uint64_t write_errors;   /* write() calls that failed (EAGAIN and EINTR
                              are not errors) */
  uint64_t reopens;        /* successful reopens */
  uint64_t reopen_errors;  /* reopens that failed (the old file stays) */
  uint64_t buffered;       /* bytes waiting in the buffer now */
} accesslog_counters_t;

typedef struct accesslog accesslog_t;
typedef void (*accesslog_close_cb)(accesslog_t *w);

/* A writer: caller-owned memory, fields private except `data`. */
struct accesslog {
  void *data;                    /* for the caller */
  /* private */
  evr_loop_t *loop;
  accesslog_options_t opt;
  int fd;                        /* -1 once closed */
  int pollable;                  /* fd is watched for writability */
  int restore_fl;                /* fd flags to put back at close, or -1 */
  size_t pipe_max;               /* batches at most this long (PIPE_BUF on a
                                    pipe or FIFO), else SIZE_MAX */
  char *buf;                     /* ring buffer of buffer_size bytes */
  size_t cap, head, len;         /* data in buf[head .. head+len) mod cap */
  evr_defer_t task;              /* writes the next batch (regular files,
                                    and the first try on a pipe) */
  evr_io_t *io;                  /* waits for a pollable fd's writability;
                                    allocated (its close callback frees it,
                                    so a failed open leaves w free) */
  evr_async_t wake;              /* accesslog_request_reopen() */
  evr_timer_t linger;            /* bounds the wait in accesslog_close() */
  int closing;
  int nclosing;                  /* handle close callbacks still due */
  accesslog_close_cb close_cb;
  uint64_t err_last_ms;          /* rate limit of write error reports */
  uint64_t err_unreported;
  _Atomic uint64_t n_written, n_dropped, n_errors, n_reopens, n_reopen_errors;
  _Atomic uint64_t n_buffered;
};

/* Open the writer: allocates its buffer, opens the path (O_WRONLY |
 * O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644; O_NONBLOCK so that a
 * FIFO without a reader fails with ENXIO instead of blocking) or
 * duplicates stdout, and makes a pipe, FIFO, socket or terminal
 * non-blocking. The writer's handles (an async handle, and an I/O watcher
 * where it writes to a pollable descriptor) are unreferenced: an open
 * writer does not keep the loop alive, nor does a batch that waits for a
 * full pipe (a stuck reader must not keep a stopping daemon from ending);
 * a batch the descriptor can take now does (it is written from a deferred
 * task), and so does accesslog_close() while it lingers.
 * Returns 0; EVR_EINVAL (NULL argument, no path, unknown format,
 * buffer_size below ACCESSLOG_LINE_MAX); EVR_ENOMEM; the error of open(),
 * dup() or fcntl() (e.g. EVR_EACCES, EVR_ENOENT). On error nothing is left
 * open and the error has been logged. */
int accesslog_open(accesslog_t *w, evr_loop_t *loop, const accesslog_options_t *opts);

/* Format r and queue the line. Never blocks, never allocates.
 * Returns 0 (queued); EVR_ENOBUFS (no room: the line was dropped and
 * counted); EVR_EINVAL (NULL, or the writer is closing). */
int accesslog_write(accesslog_t *w, const accesslog_record_t *r);

/* Reopen the path (log rotation): first write what is buffered to the old
 * descriptor (all of it to a regular file; to a pipe, what it takes
 * without blocking, the rest follows on the new one), then open the path
 * again and swap. On failure the old descriptor is kept and the error
 * logged. "-" is not reopened (returns 0, counts nothing). open() runs on
 * the loop thread: it is fast on local file systems, and happens once per
 * rotation.
 * Returns 0; EVR_EINVAL (NULL or closing); the error of open() and of
 * setting the new descriptor up. */
int accesslog_reopen(accesslog_t *w);

/* Ask for accesslog_reopen() on the writer's loop thread (through its async
 * handle): for a SIGUSR1 taken by another thread, or by a handler. Any
 * thread; async-signal-safe. Returns 0; EVR_EINVAL (NULL). */
int accesslog_request_reopen(accesslog_t *w);

/* Copy the counters. Any thread (they are atomics, each read on its own).
 * A NULL writer gives zeroes. */
void accesslog_counters(const accesslog_t *w, accesslog_counters_t *out);

/* Close the writer: no more lines are taken; what is buffered is written
 * (to a regular file, all of it now; to a pipe, as it becomes writable,
 * for at most linger_ms), what is left then is counted as dropped, the
 * descriptor is closed (a duplicate of stdout gets its flags back) and,
 * once the writer's handles are closed, cb(w) runs from the loop (may be
 * NULL); the buffer is freed before it. The memory of w is the caller's
 * again when cb runs (or, with no cb, once the loop has run its close
 * phase). Call it before closing every handle of the loop with
 * evr_loop_walk(): the writer closes its own handles.
 * Returns 0; EVR_EINVAL (NULL, never opened); EVR_EALREADY (closing). */
int accesslog_close(accesslog_t *w, accesslog_close_cb cb);

#endif
