/* evr/signal.h: POSIX signals as loop callbacks.
 *
 * Signals. While at least one signal handle of any loop watches a signal,
 * evr installs a process-wide sigaction() handler for it (SA_RESTART, every
 * signal blocked while it runs). The handler raises a flag on each watching
 * handle and wakes the handle's loop through the loop's wake-up descriptor;
 * the callback then runs on the loop thread in the poll phase. This works the
 * same under every backend and with any number of loops and threads. When the
 * last handle of a signal stops, the disposition found at the first start is
 * restored. Signals that arrive before the loop runs the callbacks coalesce
 * into one call per handle, as the kernel does for standard signals.
 * Installing a handler for a watched signal behind evr's back (sigaction(),
 * signal()) breaks delivery to the handles.
 *
 * SIGPIPE: evr installs nothing for it. evr's own socket writes use
 * MSG_NOSIGNAL (or SO_NOSIGPIPE where that is the only option; with neither,
 * they block SIGPIPE in the writing thread for the call and consume the one
 * it raised) and report EVR_EPIPE instead; writes of your own to a closed
 * pipe or socket can still raise it unless you ignore SIGPIPE yourself.
 *
 * Signal handles stay active in a child made with fork(); see evr_loop_fork()
 * in evr/loop.h.
 */
#ifndef EVR_SIGNAL_H
#define EVR_SIGNAL_H

#include "evr/loop.h"
#include "evr/async.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct evr_signal evr_signal_t;
typedef void (*evr_signal_cb)(evr_signal_t *sig, int signum);

struct evr_signal {
  evr_handle_t base;
  /* read-only */
  int signum;           /* the watched signal; 0 when stopped */
  /* private */
  evr__notify_t notify; /* raised by the signal handler */
  evr__qnode_t sig_node;/* the process-wide list of the signal's handles */
  evr_signal_cb cb;
};

/** Initialise a signal handle (inactive). Loop thread only.
 *  @return 0; EVR_EINVAL (NULL loop or handle). */
EVR_API int evr_signal_init(evr_loop_t *loop, evr_signal_t *sig);

/** Watch signum: cb(sig, signum) runs on the loop thread after the signal is
 *  delivered to the process (any thread). Starting an active handle changes
 *  its callback and, if signum differs, the signal it watches. An active,
 *  referenced signal handle keeps the loop alive. Loop thread only.
 *  @return 0; EVR_EINVAL (NULL, no cb, closing handle, signum out of range
 *          or one that cannot be caught, such as SIGKILL and SIGSTOP); or
 *          the error of sigaction(). On error the handle is unchanged. */
EVR_API int evr_signal_start(evr_signal_t *sig, int signum, evr_signal_cb cb);

/** Stop watching. A signal already caught but not yet reported is dropped.
 *  Idempotent. Loop thread only. @return 0 or EVR_EINVAL. */
EVR_API int evr_signal_stop(evr_signal_t *sig);


#ifdef __cplusplus
}
#endif
#endif
