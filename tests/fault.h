/* tests/fault.h: fault injection for the test suite.
 *
 * Every test program is linked with -Wl,--wrap for the functions listed in
 * fault.c, so calls to them from evr's static library (and from the test
 * itself) go through a wrapper that can make a chosen call fail with a
 * chosen errno, the way the kernel or the allocator would: a system call
 * returns -1, an allocation returns NULL. The wrappers also count the
 * blocks allocated and not yet freed through them, so a test can check that
 * an error path frees everything it allocated.
 *
 * Where the linker has no --wrap (macOS's ld64), FAULT_AVAILABLE is 0 and
 * the calls below do nothing; tests that need faults skip with that reason.
 */
#ifndef EVR_TESTS_FAULT_H
#define EVR_TESTS_FAULT_H

#include <stddef.h>

#ifdef EVR_TEST_FAULT
#define FAULT_AVAILABLE 1
#else
#define FAULT_AVAILABLE 0
#endif

/* Make calls of `fn` (a name from fault.c's list, or NULL for any of them)
 * fail with `err`, starting with the nth call from now (1 is the next one)
 * and going on for `count` calls (0: until fault_disarm()). An allocation
 * that fails sets errno to ENOMEM whatever `err` says; getaddrinfo returns
 * EAI_NONAME with errno set to `err`, as glibc's does when it cannot open
 * its files. Thread-safe. */
void fault_arm(const char *fn, unsigned long nth, int err, unsigned long count);
void fault_disarm(void);

/* Besides what fault_arm set: make every call of `fn` (a system call or
 * liburing's, not an allocation) fail with `err` until fault_disarm(). */
void fault_fail_always(const char *fn, int err);

/* Calls of the armed function (or of any, for NULL) seen since fault_arm,
 * and how many of them were made to fail. */
unsigned long fault_calls(void);
unsigned long fault_injected(void);

/* Blocks allocated through malloc/calloc/realloc and not yet freed, as
 * seen by the wrappers (memory allocated inside the C library and freed by
 * evr would upset the count; evr's own allocations are all counted). */
long fault_live_blocks(void);

#endif
