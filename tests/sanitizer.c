/* tests/sanitizer.c: built into every test program.
 *
 * ThreadSanitizer's built-in suppressions: libkqueue (the user-space kqueue
 * the Linux build can run the suite on) is not instrumented, and its
 * monitoring thread frees memory that kqueue() allocated on the caller's
 * thread, synchronised in ways the tool cannot see. Only reports with a
 * libkqueue frame are hidden; evr's own code stays fully checked.
 */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void) { return "race:libkqueue.so\n"; }

/* A forked child may start threads (the pool, libkqueue's helpers) in a
 * process that had threads: ThreadSanitizer refuses that unless told. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void) { return "die_after_fork=0"; }
