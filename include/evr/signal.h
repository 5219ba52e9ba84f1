/** @file evr/signal.h
 *  POSIX signals as loop callbacks.
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

/** A signal handle: see struct evr_signal. */
typedef struct evr_signal evr_signal_t;
/** A signal handle's callback, run on the loop thread in the poll phase
 *  after the signal was delivered (once for several deliveries that came
 *  before it could run).
 *  @param sig     the handle.
 *  @param signum  the signal. */
typedef void (*evr_signal_cb)(evr_signal_t *sig, int signum);

/** A handle that watches one signal. */
struct evr_signal {
  evr_handle_t base;    /**< The handle header. */
  int signum;           /**< The watched signal; 0 when stopped (read-only). */
  /** @cond PRIVATE */
  evr__notify_t notify; /* raised by the signal handler */
  evr__qnode_t sig_node;/* the process-wide list of the signal's handles */
  evr_signal_cb cb;
  /** @endcond */
};

/** Initialise a signal handle (inactive). Loop thread only.
 *  @param loop  the loop.
 *  @param sig   the handle.
 *  @return 0; EVR_EINVAL (NULL loop or handle). */
EVR_API int evr_signal_init(evr_loop_t *loop, evr_signal_t *sig);

/** Watch signum: cb(sig, signum) runs on the loop thread after the signal is
 *  delivered to the process (any thread). Starting an active handle changes
 *  its callback and, if signum differs, the signal it watches. An active,
 *  referenced signal handle keeps the loop alive. Loop thread only.
 *  @param sig     an initialised signal handle.
 *  @param signum  the signal to watch.
 *  @param cb      the callback.
 *  @return 0; EVR_EINVAL (NULL, no cb, closing handle, signum out of range
 *          or one that cannot be caught, such as SIGKILL and SIGSTOP); or
 *          the error of sigaction(). On error the handle is unchanged. */
EVR_API int evr_signal_start(evr_signal_t *sig, int signum, evr_signal_cb cb);

/** Stop watching. A signal already caught but not yet reported is dropped.
 *  The signal's disposition is restored when its last handle stops.
 *  Idempotent. Loop thread only.
 *  @param sig  the handle.
 *  @return 0; EVR_EINVAL (NULL or not a signal handle). */
EVR_API int evr_signal_stop(evr_signal_t *sig);


#ifdef __cplusplus
}
#endif
#endif
