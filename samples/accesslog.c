/* samples/accesslog.c: the access log writer (accesslog.h).
 *
 * The buffer is a ring of `cap` bytes holding whole lines: a line goes in
 * whole or not at all, so buf[head .. head+len) always ends with '\n' and
 * every batch can be cut after a newline. Only a short write leaves head
 * inside a line; the rest of that line goes out first in the next batch.
 * One write (writev of the ring's one or two pieces) per loop iteration,
 * from the deferred task or the I/O watcher, bounds the work of an
 * iteration; nothing here ever waits for a descriptor.
 */
#define _GNU_SOURCE
#include "accesslog.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define DEFAULT_BUFFER (1024u * 1024u)
#define DEFAULT_CHUNK (64u * 1024u)
#define DEFAULT_LINGER_MS 1000u
#define ERROR_REPORT_MS 10000u

#ifndef PIPE_BUF
#define PIPE_BUF 512 /* POSIX's minimum */
#endif

/* ---- causes ---- */

static const char *const cause_names[ACCESSLOG_NCAUSES] = {
    [ACCESSLOG_DONE] = "done",
    [ACCESSLOG_CLIENT_RESET] = "client-reset",
    [ACCESSLOG_CLIENT_ERROR] = "client-error",
    [ACCESSLOG_UPSTREAM_RESET] = "upstream-reset",
    [ACCESSLOG_UPSTREAM_ERROR] = "upstream-error",
    [ACCESSLOG_UPSTREAM_REFUSED] = "upstream-refused",
    [ACCESSLOG_UPSTREAM_TIMEOUT] = "upstream-timeout",
    [ACCESSLOG_UPSTREAM_UNREACHABLE] = "upstream-unreachable",
    [ACCESSLOG_IDLE_TIMEOUT] = "idle-timeout",
    [ACCESSLOG_DRAIN] = "drain",
    [ACCESSLOG_HEADER_INVALID] = "header-invalid",
    [ACCESSLOG_HEADER_TIMEOUT] = "header-timeout",
    [ACCESSLOG_TLS_FAILED] = "tls-failed",
    [ACCESSLOG_LOCAL_ERROR] = "local-error",
};

const char *accesslog_cause_name(accesslog_cause_t cause) {
  if ((unsigned)cause >= ACCESSLOG_NCAUSES || !cause_names[cause]) return "unknown";
  return cause_names[cause];
}

accesslog_cause_t accesslog_cause_connect(int status) {
  switch (status) {
    case EVR_ECONNREFUSED: return ACCESSLOG_UPSTREAM_REFUSED;
    case EVR_ETIMEDOUT: return ACCESSLOG_UPSTREAM_TIMEOUT;
    case EVR_ENETUNREACH:
    case EVR_EHOSTUNREACH: return ACCESSLOG_UPSTREAM_UNREACHABLE;
    case EVR_EMFILE:
    case EVR_ENFILE:
    case EVR_ENOMEM:
    case EVR_ENOBUFS: return ACCESSLOG_LOCAL_ERROR;
    default: break;
  }
  /* The resolver's codes sit in a block of their own (evr/error.h). */
  const char *name = evr_err_name(status);
  if (name && strncmp(name, "EAI_", 4) == 0) return ACCESSLOG_UPSTREAM_UNREACHABLE;
  return ACCESSLOG_UPSTREAM_ERROR;
}

accesslog_cause_t accesslog_cause_side(int status, int upstream_side) {
  if (status == EVR_ECONNRESET)
    return upstream_side ? ACCESSLOG_UPSTREAM_RESET : ACCESSLOG_CLIENT_RESET;
  return upstream_side ? ACCESSLOG_UPSTREAM_ERROR : ACCESSLOG_CLIENT_ERROR;
}

/* ---- formatting ---- */

struct out {
  char *p;
  size_t size, len; /* len may pass size: the line did not fit */
};

static void put(struct out *o, const char *s, size_t n) {
  if (o->len < o->size && n <= o->size - o->len) memcpy(o->p + o->len, s, n);
  o->len += n;
}

static void puts_(struct out *o, const char *s) { put(o, s, strlen(s)); }

static void putf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct out *o, const char *fmt, ...) {
  char tmp[64];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n > 0) put(o, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static const char hex[] = "0123456789abcdef";

/* Text format: printable ASCII but space, '"' and '\\' as they are, the
 * rest as \xHH. */
static void put_text_field(struct out *o, const char *s) {
  if (!s || !*s) {
    put(o, "-", 1);
    return;
  }
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c > 0x20 && *c < 0x7f && *c != '"' && *c != '\\') {
      put(o, (const char *)c, 1);
    } else {
      char e[4] = {'\\', 'x', hex[*c >> 4], hex[*c & 15]};
      put(o, e, 4);
    }
  }
}

/* The length of the well-formed UTF-8 sequence at s (2 to 4 bytes, not an
 * overlong form, a surrogate or above U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s) {
  unsigned c = s[0];
  size_t n;
  unsigned min;
  if (c >= 0xc2 && c <= 0xdf) n = 2, min = 0x80;
  else if (c >= 0xe0 && c <= 0xef) n = 3, min = 0x800;
  else if (c >= 0xf0 && c <= 0xf4) n = 4, min = 0x10000;
  else return 0;
  unsigned cp = c & (0x7fu >> n);
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0; /* also stops at the NUL */
    cp = (cp << 6) | (s[i] & 0x3fu);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

static void put_json_string(struct out *o, const char *s) {
  if (!s || !*s) {
    puts_(o, "null");
    return;
  }
  put(o, "\"", 1);
  const unsigned char *c = (const unsigned char *)s;
  while (*c) {
    const char *esc = NULL;
    switch (*c) {
      case '"': esc = "\\\""; break;
      case '\\': esc = "\\\\"; break;
      case '\b': esc = "\\b"; break;
      case '\f': esc = "\\f"; break;
      case '\n': esc = "\\n"; break;
      case '\r': esc = "\\r"; break;
      case '\t': esc = "\\t"; break;
      default: break;
    }
    if (esc) {
      puts_(o, esc);
      c++;
    } else if (*c >= 0x20 && *c < 0x7f) {
      put(o, (const char *)c, 1);
      c++;
    } else if (*c >= 0x80 && utf8_len(c)) {
      size_t n = utf8_len(c);
      put(o, (const char *)c, n);
      c += n;
    } else {
      char e[6] = {'\\', 'u', '0', '0', hex[*c >> 4], hex[*c & 15]};
      put(o, e, 6);
      c++;
    }
  }
  put(o, "\"", 1);
}

static void addr_text(const evr_addr_t *a, char buf[EVR_ADDR_STRLEN]) {
  buf[0] = '\0';
  if (a && evr_addr_format(a, buf, EVR_ADDR_STRLEN) < 0) buf[0] = '\0';
}

int accesslog_format(const accesslog_record_t *r, int format, char *buf, size_t size) {
  if (!r || !buf || (format != ACCESSLOG_TEXT && format != ACCESSLOG_JSON)) return -1;
  struct out o = {buf, size, 0};
  char when[96], client[EVR_ADDR_STRLEN], up[EVR_ADDR_STRLEN];
  struct tm tm;
  time_t sec = r->end.tv_sec;
  if (!gmtime_r(&sec, &tm)) memset(&tm, 0, sizeof tm);
  snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
           (long)(r->end.tv_nsec / 1000000 % 1000));
  addr_text(r->client, client);
  addr_text(r->upstream, up);
  unsigned long long ms = (unsigned long long)(r->duration_ns / 1000000u);
  unsigned long long frac = (unsigned long long)(r->duration_ns / 1000u % 1000u);
  const char *cause = accesslog_cause_name(r->cause);
  if (format == ACCESSLOG_TEXT) {
    puts_(&o, when);
    put(&o, " ", 1);
    put_text_field(&o, client);
    put(&o, " ", 1);
    put_text_field(&o, up);
    putf(&o, " %llu.%03llu %llu %llu ", ms, frac, (unsigned long long)r->bytes_up,
         (unsigned long long)r->bytes_down);
    puts_(&o, cause);
  } else {
    puts_(&o, "{\"time\":\"");
    puts_(&o, when);
    puts_(&o, "\",\"client\":");
    put_json_string(&o, client);
    puts_(&o, ",\"upstream\":");
    put_json_string(&o, up);
    putf(&o, ",\"duration_ms\":%llu.%03llu", ms, frac);
    putf(&o, ",\"bytes_up\":%llu", (unsigned long long)r->bytes_up);
    putf(&o, ",\"bytes_down\":%llu", (unsigned long long)r->bytes_down);
    puts_(&o, ",\"cause\":\"");
    puts_(&o, cause);
    puts_(&o, "\"}");
  }
  put(&o, "\n", 1);
  if (o.len >= size) {
    if (size) buf[0] = '\0';
    return -1;
  }
  buf[o.len] = '\0';
  return (int)o.len;
}

/* ---- the writer ---- */

/* An evr code's text; errno values evr has no name for (EISDIR, EROFS,
 * ENXIO, EDQUOT ...) through strerror(). */
static const char *err_text(int rc) {
  if (rc < 0 && rc > -4000 && strcmp(evr_err_name(rc), "UNKNOWN") == 0) return strerror(-rc);
  return evr_strerror(rc);
}

#define LOG(w, level, ...) \
  do { \
    if ((w)->opt.log) (w)->opt.log((level), __VA_ARGS__); \
  } while (0)

static void count(_Atomic uint64_t *c, uint64_t n) {
  atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static void set_buffered(accesslog_t *w) {
  atomic_store_explicit(&w->n_buffered, (uint64_t)w->len, memory_order_relaxed);
}

/* Newlines in the ring's bytes [head, head+n). */
static uint64_t ring_lines(const accesslog_t *w, size_t n) {
  uint64_t lines = 0;
  size_t pos = w->head;
  while (n > 0) {
    size_t seg = w->cap - pos < n ? w->cap - pos : n;
    const char *p = w->buf + pos, *end = p + seg;
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
      lines++;
      p++;
    }
    n -= seg;
    pos = 0;
  }
  return lines;
}

static void ring_consume(accesslog_t *w, size_t n) {
  w->head = (w->head + n) % w->cap;
  w->len -= n;
  if (w->len == 0) w->head = 0;
  set_buffered(w);
}

/* How many bytes the next batch takes: at most `limit`, cut after the last
 * newline in that range; if there is none (one line longer than limit),
 * the whole first line. The ring always ends with a newline. */
static size_t batch_len(const accesslog_t *w, size_t limit) {
  if (w->len <= limit) return w->len;
  for (size_t i = limit; i > 0; i--)
    if (w->buf[(w->head + i - 1) % w->cap] == '\n') return i;
  for (size_t i = limit; i < w->len; i++)
    if (w->buf[(w->head + i) % w->cap] == '\n') return i + 1;
  return w->len;
}

static void report_error(accesslog_t *w, const char *what, int err) {
  count(&w->n_errors, 1);
  uint64_t now = evr_now(w->loop);
  if (w->err_last_ms && now - w->err_last_ms < ERROR_REPORT_MS) {
    w->err_unreported++;
    return;
  }
  if (w->err_unreported)
    LOG(w, 0, "access log %s: %s: %s (%llu more errors since the last report)", w->opt.path,
        what, strerror(err), (unsigned long long)w->err_unreported);
  else
    LOG(w, 0, "access log %s: %s: %s (lines are dropped; reported at most every %u s)",
        w->opt.path, what, strerror(err), ERROR_REPORT_MS / 1000);
  w->err_last_ms = now ? now : 1;
  w->err_unreported = 0;
}

/* Drop n bytes from the head, counting the lines that end in them (a line
 * a short write began is lost too). */
static void drop_bytes(accesslog_t *w, size_t n) {
  count(&w->n_dropped, ring_lines(w, n));
  ring_consume(w, n);
}

enum { W_EMPTY, W_MORE, W_AGAIN };

/* One write() of the next batch. Returns W_EMPTY (nothing left), W_MORE
 * (bytes left, try again next iteration) or W_AGAIN (the descriptor is
 * full: wait for writability). A failed write drops its batch. */
static int write_batch(accesslog_t *w) {
  if (w->len == 0) return W_EMPTY;
  size_t limit = w->opt.chunk < w->pipe_max ? w->opt.chunk : w->pipe_max;
  size_t n = batch_len(w, limit);
  struct iovec iov[2];
  int niov = 1;
  size_t first = w->cap - w->head;
  iov[0].iov_base = w->buf + w->head;
  if (n <= first) {
    iov[0].iov_len = n;
  } else {
    iov[0].iov_len = first;
    iov[1].iov_base = w->buf;
    iov[1].iov_len = n - first;
    niov = 2;
  }
  ssize_t r;
  do r = writev(w->fd, iov, niov);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return W_AGAIN;
    report_error(w, "write", errno);
    drop_bytes(w, n);
    return w->len ? W_MORE : W_EMPTY;
  }
  size_t done = (size_t)r;
  count(&w->n_written, ring_lines(w, done));
  ring_consume(w, done);
  if (w->len == 0) return W_EMPTY;
  /* A short write to a pipe means it is full now. */
  return (done < n && w->pollable) ? W_AGAIN : W_MORE;
}

static void finish(accesslog_t *w);
static void on_task(evr_defer_t *task);

static void after_write(accesslog_t *w, int st);

static void on_io(evr_io_t *io, unsigned events) {
  (void)events;
  accesslog_t *w = io->base.data;
  after_write(w, write_batch(w));
}

/* What to do after a batch: more next iteration, wait for writability, or
 * stop (and finish a close). */
static void after_write(accesslog_t *w, int st) {
  if (st == W_AGAIN && w->pollable && w->io) {
    if (!evr_is_active(&w->io->base)) {
      int rc = evr_io_start(w->io, EVR_WRITE, on_io);
      if (rc) {
        /* Cannot wait for it: try again next iteration instead. */
        report_error(w, "watch", -rc);
        evr_defer(w->loop, &w->task, on_task);
      }
    }
    return;
  }
  if (w->io && evr_is_active(&w->io->base) && st == W_EMPTY) evr_io_stop(w->io);
  if (st == W_MORE || st == W_AGAIN) {
    if (!(w->io && evr_is_active(&w->io->base))) evr_defer(w->loop, &w->task, on_task);
    return;
  }
  if (w->closing) finish(w);
}

static void on_task(evr_defer_t *task) {
  accesslog_t *w = task->data;
  after_write(w, write_batch(w));
}

/* Work to do: write from the next deferred phase, unless the watcher
 * already waits for the descriptor. */
static void kick(accesslog_t *w) {
  if (w->io && evr_is_active(&w->io->base)) return;
  if (!evr_defer_pending(&w->task)) evr_defer(w->loop, &w->task, on_task);
}

/* The watcher's close callback: frees it, and counts for a closing
 * writer (data is NULL when the writer gave it up in a failed open). */
static void io_closed(evr_handle_t *h) {
  accesslog_t *w = h->data;
  free((evr_io_t *)h); /* base is its first member */
  if (w && --w->nclosing == 0 && w->close_cb) w->close_cb(w);
}

static void wake_closed(evr_handle_t *h) {
  accesslog_t *w = h->data;
  if (--w->nclosing == 0 && w->close_cb) w->close_cb(w);
}

static void on_wake(evr_async_t *a) {
  accesslog_t *w = a->base.data;
  if (!w->closing) (void)accesslog_reopen(w);
}

/* Set up a new descriptor: is it pollable (a pipe, FIFO, socket or
 * terminal the backend can watch)? Then it is made non-blocking; flags to
 * restore are kept for a duplicate of stdout. The descriptor number is the
 * same for the writer's whole life (a reopen puts the new file on it with
 * dup2()), so the watcher is initialised again in place. Returns 0 or a
 * negative evr error. */
static int setup_fd(accesslog_t *w, int fd, int is_stdout) {
  struct stat st;
  if (fstat(fd, &st) != 0) return -errno;
  if (S_ISDIR(st.st_mode)) return -EISDIR;
  w->pollable = 0;
  w->pipe_max = S_ISFIFO(st.st_mode) ? (size_t)PIPE_BUF : SIZE_MAX;
  if (S_ISREG(st.st_mode)) return 0;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -errno;
  if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) return -errno;
  if (is_stdout && !(fl & O_NONBLOCK)) w->restore_fl = fl;
  int rc;
  if (!w->io) {
    evr_io_t *io = calloc(1, sizeof *io);
    if (!io) return EVR_ENOMEM;
    if ((rc = evr_io_init(w->loop, io, fd)) != 0) {
      free(io);
      return rc;
    }
    io->base.data = w;
    evr_unref(&io->base);
    w->io = io;
  } else if ((rc = evr_io_init(w->loop, w->io, fd)) != 0) {
    return rc;
  }
  /* Can the backend watch it (epoll refuses some character devices)? */
  rc = evr_io_start(w->io, EVR_WRITE, on_io);
  if (rc == 0) {
    evr_io_stop(w->io);
    w->pollable = 1;
    return 0;
  }
  if (rc != EVR_EPERM) return rc;
  /* Written as a regular file is: put the flags back. */
  if (!(fl & O_NONBLOCK)) (void)fcntl(fd, F_SETFL, fl);
  w->restore_fl = -1;
  return 0;
}

static int open_path(const char *path) {
  int fd;
  do fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
  while (fd < 0 && errno == EINTR);
  return fd < 0 ? -errno : fd;
}

static int is_stdout_path(const char *path) { return strcmp(path, "-") == 0; }

static void close_fd(accesslog_t *w) {
  if (w->fd < 0) return;
  if (w->restore_fl >= 0) (void)fcntl(w->fd, F_SETFL, w->restore_fl);
  w->restore_fl = -1;
  /* close() may report a deferred write error (NFS); the descriptor is
   * gone either way, so it is counted, not retried. */
  if (close(w->fd) != 0 && errno != EINTR) report_error(w, "close", errno);
  w->fd = -1;
}

int accesslog_open(accesslog_t *w, evr_loop_t *loop, const accesslog_options_t *opts) {
  if (!w || !loop || !opts || !opts->path || !*opts->path) return EVR_EINVAL;
  if (opts->format != ACCESSLOG_TEXT && opts->format != ACCESSLOG_JSON) return EVR_EINVAL;
  if (opts->buffer_size && opts->buffer_size < ACCESSLOG_LINE_MAX) return EVR_EINVAL;
  void *data = w->data;
  memset(w, 0, sizeof *w);
  w->data = data;
  w->loop = loop;
  w->opt = *opts;
  if (!w->opt.buffer_size) w->opt.buffer_size = DEFAULT_BUFFER;
  if (!w->opt.chunk) w->opt.chunk = DEFAULT_CHUNK;
  if (!w->opt.linger_ms) w->opt.linger_ms = DEFAULT_LINGER_MS;
  w->fd = -1;
  w->restore_fl = -1;
  evr_defer_init(&w->task);
  w->task.data = w;
  w->cap = w->opt.buffer_size;
  w->buf = malloc(w->cap);
  int rc;
  if (!w->buf) {
    rc = EVR_ENOMEM;
    goto fail;
  }
  int to_stdout = is_stdout_path(opts->path);
  int fd = to_stdout ? fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 0) : open_path(opts->path);
  if (to_stdout && fd < 0) fd = -errno;
  if (fd < 0) {
    rc = fd;
    goto fail;
  }
  w->fd = fd;
  if ((rc = setup_fd(w, fd, to_stdout)) != 0) goto fail;
  if ((rc = evr_timer_init(loop, &w->linger)) != 0) goto fail;
  w->linger.data = w;
  /* Last: nothing after it can fail, so a failed open closes no handle
   * the caller would have to wait for. */
  if ((rc = evr_async_init(loop, &w->wake, on_wake)) != 0) goto fail;
  w->wake.base.data = w;
  evr_unref(&w->wake.base);
  return 0;
fail:
  LOG(w, 0, "access log %s: %s", opts->path, err_text(rc));
  if (w->io) {
    w->io->base.data = NULL;
    evr_close(&w->io->base, io_closed); /* frees it */
    w->io = NULL;
  }
  close_fd(w);
  free(w->buf);
  w->buf = NULL;
  w->closing = 1;
  return rc;
}

int accesslog_write(accesslog_t *w, const accesslog_record_t *r) {
  if (!w || !r || w->closing || !w->buf) return EVR_EINVAL;
  accesslog_record_t rec = *r;
  if (rec.end.tv_sec == 0 && rec.end.tv_nsec == 0 && clock_gettime(CLOCK_REALTIME, &rec.end) != 0)
    memset(&rec.end, 0, sizeof rec.end);
  char line[ACCESSLOG_LINE_MAX];
  int n = accesslog_format(&rec, w->opt.format, line, sizeof line);
  if (n <= 0 || (size_t)n > w->cap - w->len) {
    count(&w->n_dropped, 1);
    return EVR_ENOBUFS;
  }
  size_t len = (size_t)n, tail = (w->head + w->len) % w->cap;
  size_t first = w->cap - tail < len ? w->cap - tail : len;
  memcpy(w->buf + tail, line, first);
  if (first < len) memcpy(w->buf, line + first, len - first);
  w->len += len;
  set_buffered(w);
  kick(w);
  return 0;
}

/* Write what the descriptor takes now: all of it to a regular file, to a
 * pipe until it is full. Used before a reopen and at close; a regular
 * file's writes are bounded by the buffer's size. */
static void write_all_now(accesslog_t *w) {
  /* Stops at EAGAIN whatever the descriptor: a non-blocking one the
   * backend cannot watch is retried from the deferred task instead. */
  int st;
  do st = write_batch(w);
  while (st == W_MORE);
}

int accesslog_reopen(accesslog_t *w) {
  if (!w || w->closing || w->fd < 0) return EVR_EINVAL;
  if (is_stdout_path(w->opt.path)) return 0;
  write_all_now(w);
  int nfd = open_path(w->opt.path);
  if (nfd < 0) {
    count(&w->n_reopen_errors, 1);
    LOG(w, 0, "access log %s: reopen: %s (still writing to the file opened before)",
        w->opt.path, err_text(nfd));
    return nfd;
  }
  /* The watcher is stopped before its descriptor changes; the new file
   * takes the old one's number. */
  int watching = w->io && evr_is_active(&w->io->base);
  if (w->io) evr_io_stop(w->io);
  int r;
#if defined(__linux__) && !(defined(EVR_PORTABLE) && EVR_PORTABLE)
  do r = dup3(nfd, w->fd, O_CLOEXEC);
  while (r < 0 && errno == EINTR);
#else
  do r = dup2(nfd, w->fd);
  while (r < 0 && errno == EINTR);
  if (r >= 0) {
    int fdfl = fcntl(w->fd, F_GETFD);
    if (fdfl >= 0) (void)fcntl(w->fd, F_SETFD, fdfl | FD_CLOEXEC);
  }
#endif
  int rc = r < 0 ? -errno : 0;
  close(nfd);
  if (rc == 0) rc = setup_fd(w, w->fd, 0);
  if (rc) {
    /* The old file may be gone from the number already: then nothing is
     * written until the next reopen succeeds (writes fail and count). */
    count(&w->n_reopen_errors, 1);
    LOG(w, 0, "access log %s: reopen: %s", w->opt.path, err_text(rc));
    if (watching && w->io && w->pollable) (void)evr_io_start(w->io, EVR_WRITE, on_io);
    return rc;
  }
  count(&w->n_reopens, 1);
  LOG(w, 2, "access log %s: reopened", w->opt.path);
  if (w->len) kick(w);
  return 0;
}

int accesslog_request_reopen(accesslog_t *w) {
  if (!w) return EVR_EINVAL;
  return evr_async_send(&w->wake);
}

void accesslog_counters(const accesslog_t *w, accesslog_counters_t *out) {
  memset(out, 0, sizeof *out);
  if (!w) return;
  out->lines_written = atomic_load_explicit(&w->n_written, memory_order_relaxed);
  out->lines_dropped = atomic_load_explicit(&w->n_dropped, memory_order_relaxed);
  out->write_errors = atomic_load_explicit(&w->n_errors, memory_order_relaxed);
  out->reopens = atomic_load_explicit(&w->n_reopens, memory_order_relaxed);
  out->reopen_errors = atomic_load_explicit(&w->n_reopen_errors, memory_order_relaxed);
  out->buffered = atomic_load_explicit(&w->n_buffered, memory_order_relaxed);
}

static void on_linger(evr_timer_t *t) { finish(t->data); }

/* The end of a close: what is still buffered is dropped, the descriptor
 * closed, the handles closed; close_cb runs from their close callbacks. */
static void finish(accesslog_t *w) {
  if (w->fd < 0 && !w->buf) return; /* already finished */
  if (w->len) {
    LOG(w, 1, "access log %s: closing with %zu bytes unwritten", w->opt.path, w->len);
    drop_bytes(w, w->len);
  }
  evr_defer_cancel(&w->task);
  evr_timer_stop(&w->linger);
  close_fd(w);
  free(w->buf);
  w->buf = NULL;
  w->nclosing = 1;
  evr_close(&w->wake.base, wake_closed);
  if (w->io) {
    w->nclosing++;
    evr_close(&w->io->base, io_closed);
    w->io = NULL;
  }
}

int accesslog_close(accesslog_t *w, accesslog_close_cb cb) {
  if (!w || !w->loop) return EVR_EINVAL;
  if (w->closing) return EVR_EALREADY;
  w->closing = 1;
  w->close_cb = cb;
  write_all_now(w);
  if (w->len == 0 || !w->pollable || !w->io) {
    finish(w);
    return 0;
  }
  /* A pipe that is full: wait for it, for linger_ms at most. The watcher
   * keeps the loop alive meanwhile. */
  evr_ref(&w->io->base);
  if (!evr_is_active(&w->io->base)) (void)evr_io_start(w->io, EVR_WRITE, on_io);
  evr_defer_cancel(&w->task);
  evr_timer_start(&w->linger, on_linger, w->opt.linger_ms, 0);
  return 0;
}
