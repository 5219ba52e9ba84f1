/* reactor/error.c: names and messages for evr error codes, generated from the
 * one list in evr/error.h so the enum and the strings cannot drift apart. */
#include "reactor/internal.h"

#define EVR__ERR_MSG(name, value, msg) case EVR_##name: return msg;
#define EVR__ERR_NAME(name, value, msg) case EVR_##name: return #name;

const char *evr_strerror(int rc) {
  switch (rc) {
    case 0: return "success";
    EVR_ERRNO_MAP(EVR__ERR_MSG)
    default: return "unknown error";
  }
}

const char *evr_err_name(int rc) {
  switch (rc) {
    case 0: return "OK";
    EVR_ERRNO_MAP(EVR__ERR_NAME)
    default: return "UNKNOWN";
  }
}

const char *evr_version_string(void) { return EVR_VERSION_STRING; }
