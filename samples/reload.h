/* samples/reload.h: seamless reload of a daemon by a new copy of its own
 * executable, with its listening sockets handed over (evr/handoff.h), and
 * the --pid-file.
 *
 * The old process, on SIGUSR2 (reload_run()): starts the executable it was
 * started from (reload_init()) with the same arguments, one end of a
 * socketpair in EVR_RELOAD_FD; sends it every listening socket registered
 * with reload_add(); waits (at most --reload-timeout seconds, serving on
 * meanwhile) for a "ready" byte on that socket. Then it drains and exits as
 * on SIGTERM; on any failure it kills and reaps the new copy, logs why and
 * serves on.
 *
 * The new copy (EVR_RELOAD_FD set): reload_init() receives the sockets
 * before anything else; the daemon takes them instead of binding
 * (reload_listen(), reload_named(), reload_adopt()); service_ready()
 * (daemon.c) calls reload_ready(), which checks that every socket received
 * was taken, writes the pid file and sends the byte.
 *
 * Items are named "one/<i>" (the one socket of --listen address i, that
 * every loop of the process accepts on), "loop/<i>/<j>" (loop j's own
 * SO_REUSEPORT socket for address i) and "metrics" (evr-proxy's). */
#ifndef EVR_SAMPLES_RELOAD_H
#define EVR_SAMPLES_RELOAD_H

#include "evr/evr.h"

/* First thing in main(): resolve the executable (/proc/self/exe where it
 * exists, else argv[0] made absolute against the start directory, or
 * searched in PATH when it has no '/'), keep argv, and when EVR_RELOAD_FD
 * is set (removed from the environment), receive the old process's
 * sockets; exits 1 if that fails. */
void reload_init(int argc, char **argv);

/* The options shared by the daemons: --pid-file FILE and
 * --reload-timeout SEC. 1 if argv[*i] is one of them (its value is taken,
 * *i advanced), else 0. */
int reload_option(int argc, char **argv, int *i);

/* 1 in a process started by a reload (it received sockets), else 0. */
int reload_active(void);

/* For the daemons' n --listen addresses (fds[i]: a socket passed by socket
 * activation, or -1): in a new copy, fds[i] becomes the received "one/<i>"
 * socket; received "one/<i>" sockets beyond n (those the old process got by
 * socket activation and served unasked) are appended, as
 * activation_listen() does. Exits 1 when one does not match its address. */
void reload_listen(const char **text, evr_addr_t *addrs, int *fds, int *n, int max);

/* The received socket named name (evr-proxy's "metrics"): its descriptor,
 * or -1. With *text set, its address must match (else exit 1); without,
 * *addr and *text are set from it (static storage). */
int reload_named(const char *name, evr_addr_t *addr, const char **text);

/* Adopt the received "loop/<i>/<loop>" socket into l (not yet open), in
 * place of binding addr. 0, or a negative evr error (logged). */
int reload_adopt(evr_listener_t *l, int i, int loop, const evr_addr_t *addr, const char *text,
                 evr_accept_cb cb);

/* Register a listener of this process to hand over at a reload, under the
 * item name "one/<i>" (loop < 0) or "loop/<i>/<loop>"; i < 0: "metrics".
 * Called on the main thread at set-up; ignored in a forked worker. */
void reload_add(evr_listener_t *l, int i, int loop);

/* On SIGUSR2, on the main thread (while the loops serve on). draining: the
 * process is already stopping (the reload is refused). Returns 0 when the
 * new process is ready and serves every socket: the caller then drains and
 * exits as on SIGTERM, without telling the service manager it stops; -1
 * otherwise (logged; serve on). A SIGUSR2 that arrives meanwhile is
 * ignored; a stop signal (SIGTERM, SIGINT, SIGHUP, blocked by the caller)
 * aborts the reload and stays pending. */
int reload_run(int draining);

/* Called by service_ready(): in a new copy, check that every received
 * socket was taken, then report ready to the old process; in every
 * process, write the pid file. 0, or -1 (logged: the start fails). */
int reload_ready(void);

#endif
