# evr_add_test(<name> [BACKEND_DEPENDENT] [TIMEOUT <s>] [LABELS <l>...])
# EVR_TEST_WRAPPER (a cache list, e.g. "valgrind;--error-exitcode=99")
# runs every test program under a tool.
# Builds tests/test_<name>.c into test_<name>. A backend-dependent test is
# registered once per built backend as <name>.<backend>, with EVR_BACKEND set;
# a pure one once as <name>. cmocka runs all cases in one process, so ctest's
# TIMEOUT is the hang guard.
# Fault injection (tests/fault.h): every test program is linked with
# -Wl,--wrap for the functions tests/fault.c wraps, where the linker can.
include(CheckLinkerFlag)
set(EVR_TEST_FAULT_FNS malloc calloc realloc free pipe pipe2 getaddrinfo)
if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
  list(APPEND EVR_TEST_FAULT_FNS epoll_create1 epoll_ctl eventfd)
endif()
if(EVR_HAVE_IO_URING)
  list(APPEND EVR_TEST_FAULT_FNS io_uring_queue_init_params)
endif()
check_linker_flag(C "-Wl,--wrap=malloc" EVR_LINKER_HAS_WRAP)
set(EVR_TEST_FAULT_WRAP)
if(EVR_LINKER_HAS_WRAP)
  foreach(fn IN LISTS EVR_TEST_FAULT_FNS)
    list(APPEND EVR_TEST_FAULT_WRAP "-Wl,--wrap=${fn}")
  endforeach()
endif()

function(evr_add_test name)
  cmake_parse_arguments(T "BACKEND_DEPENDENT" "TIMEOUT" "LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  add_executable(test_${name} test_${name}.c helpers.c e2e.c sanitizer.c fault.c)
  target_link_libraries(test_${name} PRIVATE evr_internal PkgConfig::CMOCKA Threads::Threads)
  # The suite is kept free of implicit narrowing and shadowing, as the library is.
  target_compile_options(test_${name} PRIVATE
    "$<$<C_COMPILER_ID:GNU,Clang,AppleClang>:-Wconversion;-Wshadow>")
  if(EVR_TEST_FAULT_WRAP)
    target_compile_definitions(test_${name} PRIVATE EVR_TEST_FAULT=1)
    target_link_options(test_${name} PRIVATE ${EVR_TEST_FAULT_WRAP})
  endif()
  target_compile_definitions(test_${name} PRIVATE EVR_BIN_DIR="${CMAKE_RUNTIME_OUTPUT_DIRECTORY}")
  if(T_BACKEND_DEPENDENT)
    foreach(b IN LISTS EVR_BUILT_BACKENDS)
      set(_labels "${name};${b};${T_LABELS}")
      # Under valgrind (3.19) a thread waiting in io_uring_enter keeps every
      # other thread from running, so a wake-up from another thread (async,
      # pool, resolver, signal thread) never comes and the test times out:
      # the io_uring entries of tests that use other threads ("threads",
      # "workers") are not run there. ASan, UBSan and TSan cover them.
      if(b STREQUAL "io_uring" AND ("threads" IN_LIST T_LABELS OR "workers" IN_LIST T_LABELS))
        list(APPEND _labels novalgrind)
      endif()
      add_test(NAME ${name}.${b} COMMAND ${EVR_TEST_WRAPPER} $<TARGET_FILE:test_${name}>)
      # 77: the fixture found the backend refused by the kernel (io_uring
      # disabled or missing); it prints why (tests/helpers.c).
      set_tests_properties(${name}.${b} PROPERTIES
        ENVIRONMENT "EVR_BACKEND=${b}" TIMEOUT ${T_TIMEOUT} LABELS "${_labels}"
        SKIP_RETURN_CODE 77)
    endforeach()
  else()
    add_test(NAME ${name} COMMAND ${EVR_TEST_WRAPPER} $<TARGET_FILE:test_${name}>)
    set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "${name};${T_LABELS}")
  endif()
endfunction()
