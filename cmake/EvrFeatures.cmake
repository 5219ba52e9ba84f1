# Probe the system calls and flags evr has fast paths for, once, into
# EVR_HAVE_<X> (0 or 1) for cmake/evr_config.h.in. The code tests these
# macros, never the operating system's name.
include(CheckSymbolExists)

function(evr_probe var symbol headers)
  set(CMAKE_REQUIRED_DEFINITIONS -D_GNU_SOURCE -D_DEFAULT_SOURCE)
  check_symbol_exists(${symbol} "${headers}" ${var}_FOUND)
  if(${var}_FOUND)
    set(${var} 1 PARENT_SCOPE)
  else()
    set(${var} 0 PARENT_SCOPE)
  endif()
endfunction()

# The environment in setuid/setgid programs: secure_getenv (glibc, musl,
# FreeBSD 14), else issetugid (the BSDs, macOS, musl).
evr_probe(EVR_HAVE_SECURE_GETENV secure_getenv "stdlib.h")
evr_probe(EVR_HAVE_ISSETUGID issetugid "unistd.h")

set(EVR_FEATURES "")
foreach(f SECURE_GETENV ISSETUGID)
  if(EVR_HAVE_${f})
    string(TOLOWER ${f} _f)
    list(APPEND EVR_FEATURES ${_f})
  endif()
endforeach()
