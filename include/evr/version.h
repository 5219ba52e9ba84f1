/* evr/version.h: version numbers and the export macro. */
#ifndef EVR_VERSION_H
#define EVR_VERSION_H

#define EVR_VERSION_MAJOR 0
#define EVR_VERSION_MINOR 1
#define EVR_VERSION_PATCH 0
#define EVR_VERSION_STRING "0.1.0"

#if defined(EVR_STATIC)
#define EVR_API
#elif defined(__GNUC__) || defined(__clang__)
#define EVR_API __attribute__((visibility("default")))
#else
#define EVR_API
#endif

/** The library's version string, e.g. "0.1.0". Thread-safe. */
EVR_API const char *evr_version_string(void);

#endif
