/** @file evr/version.h
 *  Version numbers and the export macro.
 */
#ifndef EVR_VERSION_H
#define EVR_VERSION_H

/** The major version of these headers, which is also the shared library's
 *  SONAME version (libevr.so.0). */
#define EVR_VERSION_MAJOR 0
/** The minor version of these headers. */
#define EVR_VERSION_MINOR 1
/** The patch version of these headers. */
#define EVR_VERSION_PATCH 0
/** The version of these headers as a string; evr_version_string() gives
 *  the library's. */
#define EVR_VERSION_STRING "0.1.0"

/** Marks the library's exported functions. It gives them default
 *  visibility in the shared library (built with hidden visibility) and is
 *  empty when EVR_STATIC is defined: the `evr::evr_static` CMake target
 *  defines it for the programs that link it. */
#if defined(EVR_STATIC)
#define EVR_API
#elif defined(__GNUC__) || defined(__clang__)
#define EVR_API __attribute__((visibility("default")))
#else
#define EVR_API
#endif

/** The library's version string, such as "0.1.0": that of the library
 *  linked at run time, where EVR_VERSION_STRING gives the headers'.
 *  Thread-safe.
 *  @return a static string, never NULL. */
EVR_API const char *evr_version_string(void);

#endif
