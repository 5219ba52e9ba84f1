/** @file evr/evr.h
 *  The umbrella header, the only include a user needs.
 */

/** @mainpage evr API reference
 *
 * evr is a portable event loop (reactor) in C11 for network daemons on
 * Linux, the BSDs and macOS. A program includes one header, evr/evr.h,
 * which includes the others:
 *
 * - evr/loop.h: the loop, its run modes and phases, handles and their
 *   lifetime (evr_close()), prepare and check hooks, fork;
 * - evr/io.h: watchers of file descriptors;
 * - evr/timer.h: one-shot and repeating timers;
 * - evr/defer.h: deferred tasks, run after each iteration's I/O;
 * - evr/async.h: waking a loop from other threads (async handles, posted
 *   callbacks);
 * - evr/signal.h: POSIX signals as loop callbacks;
 * - evr/work.h: the thread pool;
 * - evr/addr.h: socket addresses as text, name resolution;
 * - evr/tcp.h: streams (TCP and Unix sockets, pipes) and listeners;
 * - evr/handoff.h: handing listeners to another process (seamless reload);
 * - evr/error.h: the error codes; evr/version.h: version numbers.
 *
 * Conventions that hold throughout:
 * - Functions that return int return 0 (or a count) on success and a
 *   negative EVR_E* code on failure (EVR_EAGAIN == -EAGAIN on POSIX
 *   systems); the library never prints or aborts.
 * - Handles, timers and requests are caller-owned structs: evr never
 *   allocates them. Their fields are public, read-only or private as each
 *   struct says; private fields are left out of this reference.
 * - A loop and everything on it belong to the thread that runs the loop,
 *   unless a function says it is thread-safe.
 *
 * The guides in the source tree's docs/ directory (loop.md, timers.md,
 * threads.md, net.md, addr.md) give the contracts in full.
 */
#ifndef EVR_EVR_H
#define EVR_EVR_H

#include "evr/version.h"
#include "evr/error.h"
#include "evr/loop.h"
#include "evr/io.h"
#include "evr/defer.h"
#include "evr/timer.h"
#include "evr/async.h"
#include "evr/signal.h"
#include "evr/work.h"
#include "evr/addr.h"
#include "evr/tcp.h"
#include "evr/handoff.h"

#endif
