/* backends/registry.c: the backends built into this library, best first.
 * The only file that knows which backends exist; the core asks it by name. */
#include <string.h>
#include "evr_config.h"
#include "reactor/internal.h"

#if EVR_HAVE_EPOLL
extern const evr__backend_t evr__backend_epoll;
#endif
#if EVR_HAVE_IO_URING
extern const evr__backend_t evr__backend_io_uring;
#endif
#if EVR_HAVE_KQUEUE
extern const evr__backend_t evr__backend_kqueue;
#endif
#if EVR_HAVE_POLL
extern const evr__backend_t evr__backend_poll;
#endif

const evr__backend_t *const evr__backend_table[] = {
#if EVR_HAVE_EPOLL
    &evr__backend_epoll,
#endif
#if EVR_HAVE_IO_URING
    /* After epoll for now: selected by name (EVR_BACKEND=io_uring). */
    &evr__backend_io_uring,
#endif
#if EVR_HAVE_KQUEUE && !EVR_KQUEUE_EMULATED
    &evr__backend_kqueue,
#endif
#if EVR_HAVE_POLL
    &evr__backend_poll,
#endif
#if EVR_HAVE_KQUEUE && EVR_KQUEUE_EMULATED
    /* A user-space kqueue (libkqueue on Linux) is for testing; never the
     * default while a native backend exists. */
    &evr__backend_kqueue,
#endif
    NULL};

static const char *const names[] = {
#if EVR_HAVE_EPOLL
    "epoll",
#endif
#if EVR_HAVE_IO_URING
    "io_uring",
#endif
#if EVR_HAVE_KQUEUE && !EVR_KQUEUE_EMULATED
    "kqueue",
#endif
#if EVR_HAVE_POLL
    "poll",
#endif
#if EVR_HAVE_KQUEUE && EVR_KQUEUE_EMULATED
    "kqueue",
#endif
    NULL};

const evr__backend_t *evr__backend_find(const char *name) {
  for (size_t i = 0; evr__backend_table[i]; i++)
    if (strcmp(evr__backend_table[i]->name, name) == 0)
      return evr__backend_table[i];
  return NULL;
}

const char *const *evr_backends(void) { return names; }
