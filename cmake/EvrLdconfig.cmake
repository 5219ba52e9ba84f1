# cmake/EvrLdconfig.cmake: the last step of installing the shared library
# (included by the install script, with EVR_LIBDIR and EVR_SONAME set).
#
# The loader finds libraries of its system directories through a cache
# (/etc/ld.so.cache) that ldconfig writes: a program linked with a new
# libevr.so.0 in /usr/local/lib fails to start until ldconfig has run. When
# the library goes into the running system (no DESTDIR: not a staging
# directory, not CPack) and into a directory ldconfig scans, run ldconfig
# when installing as root, else say that it must be run. A private prefix
# is none of the loader's business (LD_LIBRARY_PATH, or an rpath, finds it).

if(NOT CMAKE_HOST_SYSTEM_NAME STREQUAL "Linux" OR NOT "$ENV{DESTDIR}" STREQUAL "")
  return()
endif()
find_program(EVR_LDCONFIG ldconfig PATHS /sbin /usr/sbin)
if(NOT EVR_LDCONFIG)
  return()
endif()
if(IS_ABSOLUTE "${EVR_LIBDIR}")
  set(_evr_libdir "${EVR_LIBDIR}")
else()
  set(_evr_libdir "${CMAKE_INSTALL_PREFIX}/${EVR_LIBDIR}")
endif()
# Compared as real paths: with a merged /usr, ldconfig names
# /usr/lib/x86_64-linux-gnu as /lib/x86_64-linux-gnu.
get_filename_component(_evr_libdir_real "${_evr_libdir}" REALPATH)

# ldconfig -v names each directory it scans on a line "DIR: (from ...)";
# -N -X: write neither the cache nor links.
execute_process(COMMAND "${EVR_LDCONFIG}" -N -X -v
  OUTPUT_VARIABLE _evr_out ERROR_QUIET)
string(REGEX MATCHALL "(^|\n)/[^:\n]*:" _evr_dirs "${_evr_out}")
set(_evr_scanned FALSE)
foreach(_evr_dir IN LISTS _evr_dirs)
  string(STRIP "${_evr_dir}" _evr_dir)
  string(REGEX REPLACE "/*:$" "" _evr_dir "${_evr_dir}")
  get_filename_component(_evr_dir "${_evr_dir}" REALPATH)
  if(_evr_dir STREQUAL _evr_libdir_real)
    set(_evr_scanned TRUE)
  endif()
endforeach()
if(NOT _evr_scanned)
  return()
endif()

execute_process(COMMAND id -u OUTPUT_VARIABLE _evr_uid
  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(_evr_uid STREQUAL "0")
  message(STATUS "Running ldconfig (new ${EVR_SONAME} in ${_evr_libdir})")
  execute_process(COMMAND "${EVR_LDCONFIG}" RESULT_VARIABLE _evr_rc)
  if(NOT _evr_rc EQUAL 0)
    message(WARNING "ldconfig failed (${_evr_rc}): run it as root before using ${EVR_SONAME}")
  endif()
else()
  message(STATUS "Run ldconfig as root: the loader finds the new ${EVR_SONAME} in ${_evr_libdir} only then")
endif()
