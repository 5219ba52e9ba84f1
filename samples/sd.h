/* samples/sd.h: the daemons' side of the service manager's protocols
 * (sd_listen_fds(3), sd_notify(3), sd_watchdog_enabled(3)):
 *   - socket activation: LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES name the
 *     listening sockets passed from descriptor 3 (SD_FIRST_FD) on;
 *   - notification: one datagram per state change ("READY=1",
 *     "STOPPING=1", "WATCHDOG=1") to the AF_UNIX socket in NOTIFY_SOCKET;
 *   - watchdog: WATCHDOG_USEC (and WATCHDOG_PID) ask for "WATCHDOG=1" at
 *     least that often.
 * A build with libsystemd (EVR_HAVE_LIBSYSTEMD, samples/CMakeLists.txt)
 * calls it; any other build (no libsystemd-dev, the BSDs, macOS, musl, a
 * portable build) uses the small implementation of the same protocols in
 * sd.c, so the daemons behave alike wherever they run. Used by daemon.c
 * only. */
#ifndef EVR_SAMPLES_SD_H
#define EVR_SAMPLES_SD_H

#include <stdint.h>

#define SD_FIRST_FD 3 /* SD_LISTEN_FDS_START */

/* "libsystemd" or "built-in". */
const char *sysd_impl(void);

/* The number n of sockets passed to this process (descriptors SD_FIRST_FD
 * to SD_FIRST_FD + n - 1, now close-on-exec), 0 if none or if LISTEN_PID
 * names another process, or a negative errno (malformed variables, a
 * descriptor that is not open). *names gets n malloc'd names (from
 * LISTEN_FDNAMES, "unknown" where it is not set) in a malloc'd array, to be
 * freed by the caller, or NULL. LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES
 * are removed from the environment in every case. Not thread-safe (it
 * changes the environment): call it before starting threads. */
int sysd_listen_fds(char ***names);

/* Send state ("READY=1", ...) to NOTIFY_SOCKET. 1 if sent, 0 if there is
 * no NOTIFY_SOCKET (or this process is detached), a negative errno on
 * failure. Thread-safe. */
int sysd_notify(const char *state);

/* WATCHDOG_USEC in microseconds when the watchdog is on for this process
 * (WATCHDOG_PID unset or equal to getpid()), else 0. */
uint64_t sysd_watchdog_usec(void);

/* In a forked worker: from now on this process sends nothing (the service
 * manager accepts notifications from its main process only). */
void sysd_detach(void);

#endif
