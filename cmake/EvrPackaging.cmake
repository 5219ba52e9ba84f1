# cmake/EvrPackaging.cmake: what `cmake --install` puts where, the man
# pages, and the Debian packages `cpack -G DEB` makes in the build directory.
#
# Every installed file belongs to one component, and each component is one
# Debian package:
#   lib    libevr0      the shared library
#   dev    libevr-dev   headers, static library, libevr.so, evr.pc, the CMake
#                       package, evr(3)
#   tools  evr-tools    evr-echo, evr-proxy, their man pages, systemd units
# `cmake --install` without --component installs all three.

include(CMakePackageConfigHelpers)

set(EVR_SOVERSION ${PROJECT_VERSION_MAJOR})

# ---- the library: headers, libraries, CMake package ----
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/evr
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev)
install(TARGETS evr_shared evr_static EXPORT evrTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT lib NAMELINK_COMPONENT dev
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT lib)
install(EXPORT evrTargets NAMESPACE evr::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/evr COMPONENT dev)
configure_package_config_file(cmake/evrConfig.cmake.in
  ${PROJECT_BINARY_DIR}/evrConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/evr)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/evrConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/evrConfig.cmake ${PROJECT_BINARY_DIR}/evrConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/evr COMPONENT dev)

# ---- files that name the installation prefix ----
# evr.pc and the systemd units name the directories evr is installed in.
# The prefix is only known when installing (`cmake --install --prefix DIR`,
# or CPack's /usr), so they are written then, from templates made here, and
# hold plain paths: `-I/usr/local/include`, `ExecStart=/usr/bin/evr-echo`.
# CPack installs with DESTDIR (CPACK_SET_DESTDIR below), so that
# CMAKE_INSTALL_PREFIX is the packages' /usr while it stages them.
set(EVR_INSTALL_TEMPLATES ${PROJECT_BINARY_DIR}/install-templates)
# evr_install_configured(TEMPLATE NAME DESTINATION COMPONENT): install
# TEMPLATE as DESTINATION/NAME, configured at install time with @EVR_PREFIX@
# the installation prefix. Written straight to its place (the build tree
# may not be writable by whoever installs) and listed in the manifest.
function(evr_install_configured template name destination component)
  install(CODE "
    set(EVR_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
    if(IS_ABSOLUTE \"${destination}\")
      set(_evr_dest \"\$ENV{DESTDIR}${destination}/${name}\")
    else()
      set(_evr_dest \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${destination}/${name}\")
    endif()
    message(STATUS \"Installing: \${_evr_dest}\")
    configure_file(\"${template}\" \"\${_evr_dest}\" @ONLY)
    list(APPEND CMAKE_INSTALL_MANIFEST_FILES \"\${_evr_dest}\")
  " COMPONENT ${component})
endfunction()

# evr.pc. A directory is ${prefix}/DIR, or DIR as it is when absolute;
# Requires.private is left out when no backend needs another library.
foreach(d LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${d}}")
    set(EVR_PC_${d} "${CMAKE_INSTALL_${d}}")
  else()
    set(EVR_PC_${d} "\${prefix}/${CMAKE_INSTALL_${d}}")
  endif()
endforeach()
set(EVR_PC_REQUIRES_PRIVATE "")
if(EVR_BACKEND_PC_REQUIRES)
  string(JOIN " " _evr_pc_private ${EVR_BACKEND_PC_REQUIRES})
  set(EVR_PC_REQUIRES_PRIVATE "Requires.private: ${_evr_pc_private}\n")
endif()
# The prefix stays a placeholder in the template, for the install step.
set(EVR_PC_PREFIX "@EVR_PREFIX@")
configure_file(cmake/evr.pc.in ${EVR_INSTALL_TEMPLATES}/evr.pc @ONLY)
evr_install_configured(${EVR_INSTALL_TEMPLATES}/evr.pc evr.pc
  ${CMAKE_INSTALL_LIBDIR}/pkgconfig dev)

# The loader caches the libraries of its directories (ld.so.cache): a new
# libevr.so.0 in /usr/local/lib is not found until ldconfig runs: the install
# step runs it when that is needed and can be done (cmake/EvrLdconfig.cmake).
install(CODE "
  set(EVR_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
  set(EVR_SONAME libevr.so.${EVR_SOVERSION})
  include(\"${PROJECT_SOURCE_DIR}/cmake/EvrLdconfig.cmake\")
" COMPONENT lib)

# ---- the daemons and their systemd units ----
if(TARGET evr-echo AND TARGET evr-proxy)
  set(EVR_PACKAGE_TOOLS ON)
  install(TARGETS evr-echo evr-proxy RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT tools)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_BINDIR}")
    set(EVR_UNIT_BINDIR "${CMAKE_INSTALL_BINDIR}")
  else()
    set(EVR_UNIT_BINDIR "@EVR_PREFIX@/${CMAKE_INSTALL_BINDIR}")
  endif()
  # lib/systemd/system under the prefix: /usr/lib/systemd/system in the
  # package (the same directory as /lib/systemd/system on a merged /usr),
  # /usr/local/lib/systemd/system for a local install; systemd reads both.
  foreach(unit evr-echo.service evr-echo.socket evr-proxy.service evr-proxy.socket)
    configure_file(${PROJECT_SOURCE_DIR}/packaging/systemd/${unit}.in
      ${EVR_INSTALL_TEMPLATES}/${unit} @ONLY)
    evr_install_configured(${EVR_INSTALL_TEMPLATES}/${unit} ${unit} lib/systemd/system tools)
  endforeach()
else()
  set(EVR_PACKAGE_TOOLS OFF)
endif()

# ---- man pages ----
# docs/evr-echo.md, docs/evr-proxy.md and docs/evr.3.md are the pages;
# go-md2man (Debian package go-md2man) makes roff of them at build time
# (cmake/EvrManPage.cmake says how).
option(EVR_MAN "Build and install the man pages (needs go-md2man)" ${EVR_TOP_LEVEL})
set(EVR_MAN_PAGES "")
if(EVR_MAN)
  find_program(EVR_GO_MD2MAN go-md2man)
  if(NOT EVR_GO_MD2MAN)
    if(DEFINED ENV{CI})
      message(FATAL_ERROR "evr man pages: go-md2man not found (apt-get install go-md2man)")
    endif()
    message(STATUS "evr man pages: go-md2man not found (apt-get install go-md2man, "
      "or -DEVR_MAN=OFF): building no man pages")
  else()
    find_package(Git QUIET)
    set(_evr_git "")
    if(GIT_FOUND AND EXISTS ${PROJECT_SOURCE_DIR}/.git)
      set(_evr_git ${GIT_EXECUTABLE}) # dates the pages by their last commit
    endif()
    set(_evr_pages "evr-echo.md=evr-echo(1)" "evr-proxy.md=evr-proxy(1)" "evr.3.md=evr(3)")
    set(_evr_man_outputs "")
    foreach(spec IN ITEMS "evr.3.md:evr.3:man3:dev" "evr-echo.md:evr-echo.1:man1:tools"
                          "evr-proxy.md:evr-proxy.1:man1:tools")
      string(REPLACE ":" ";" spec "${spec}")
      list(GET spec 0 md)
      list(GET spec 1 page)
      list(GET spec 2 section_dir)
      list(GET spec 3 component)
      if(component STREQUAL "tools" AND NOT EVR_PACKAGE_TOOLS)
        continue()
      endif()
      set(out ${PROJECT_BINARY_DIR}/man/${page})
      add_custom_command(OUTPUT ${out}
        COMMAND ${CMAKE_COMMAND} -DMD2MAN=${EVR_GO_MD2MAN}
          -DSRC=${PROJECT_SOURCE_DIR}/docs/${md} -DDST=${out}
          -DVERSION=${PROJECT_VERSION} "-DPAGES=${_evr_pages}" "-DGIT=${_evr_git}"
          -P ${PROJECT_SOURCE_DIR}/cmake/EvrManPage.cmake
        DEPENDS ${PROJECT_SOURCE_DIR}/docs/${md} ${PROJECT_SOURCE_DIR}/cmake/EvrManPage.cmake
        COMMENT "Generating man page ${page}"
        VERBATIM)
      list(APPEND _evr_man_outputs ${out})
      list(APPEND EVR_MAN_PAGES ${page})
      install(FILES ${out} DESTINATION ${CMAKE_INSTALL_MANDIR}/${section_dir} COMPONENT ${component})
    endforeach()
    add_custom_target(man ALL DEPENDS ${_evr_man_outputs})
  endif()
endif()

# ---- Debian packages: cpack -G DEB ----
# Only for evr's own build: a project that adds evr as a subdirectory keeps
# its CPack set-up to itself.
if(NOT EVR_TOP_LEVEL)
  return()
endif()
set(EVR_PACKAGE_MAINTAINER "evr maintainers <maintainers@users.noreply.r-seed-48617311.example>"
  CACHE STRING "Maintainer field of the Debian packages")
set(EVR_PACKAGE_RELEASE 1 CACHE STRING "Debian revision of the packages (the part after the version)")

set(CPACK_PACKAGE_NAME evr)
set(CPACK_PACKAGE_VENDOR "the evr authors")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${EVR_PACKAGE_MAINTAINER}")
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_GENERATOR DEB)
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_COMPONENTS_ALL lib dev)
if(EVR_PACKAGE_TOOLS)
  list(APPEND CPACK_COMPONENTS_ALL tools)
endif()

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${EVR_PACKAGE_RELEASE})
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${EVR_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Depends from the ELF files (dpkg-shlibdeps: libc6, liburing2, ...), and
# between the packages (the components' DEPENDS, cpack_add_component below):
# the same version of libevr0 for the other two.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_ENABLE_COMPONENT_DEPENDS ON)
# evr-tools' programs need libevr.so.0, which no installed package has yet:
# dpkg-shlibdeps finds it in the build tree (the dependency on libevr0 comes
# from the component dependency).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS ${PROJECT_BINARY_DIR})
# libevr0 ships a shlibs file, so that packages built against it depend on
# libevr0 (>= this version); CPack adds ldconfig to its postinst and postrm.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")

set(CPACK_DEBIAN_LIB_PACKAGE_NAME libevr${EVR_SOVERSION})
set(CPACK_DEBIAN_LIB_PACKAGE_SECTION libs)
set(CPACK_COMPONENT_LIB_DESCRIPTION "portable event loop for network daemons
evr is an event loop (reactor) in C11 for network daemons, on the Node.js
model: callbacks run one at a time on the loop's thread, timers never fire
early, deferred tasks run after each iteration's I/O callbacks, and more
cores are used by more loops. It offers I/O watchers, a timer wheel,
deferred tasks, cross-thread wake-ups, signals, a thread pool, name
resolution, and TCP and Unix-socket streams and listeners with
backpressure, over epoll, io_uring or poll.

This package holds the shared library.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libevr-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_COMPONENT_DEV_DESCRIPTION "portable event loop for network daemons (development files)
evr is an event loop (reactor) in C11 for network daemons, on the Node.js
model, over epoll, io_uring or poll.

This package holds what building programs with evr needs: the headers, the
static library, the pkg-config file (evr.pc), the CMake package
(find_package(evr)) and the overview man page evr(3).")
# What the static library links besides itself, as evr.pc's Requires.private
# says: the -dev packages of those libraries.
set(_evr_dev_depends "")
foreach(pc IN LISTS EVR_BACKEND_PC_REQUIRES)
  if(pc STREQUAL "libcrypto")
    continue() # libssl-dev ships libcrypto.pc too
  endif()
  list(APPEND _evr_dev_depends "${pc}-dev")
endforeach()
string(JOIN ", " CPACK_DEBIAN_DEV_PACKAGE_DEPENDS ${_evr_dev_depends})

set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME evr-tools)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SECTION net)
set(CPACK_COMPONENT_TOOLS_DESCRIPTION "TCP echo server and TCP proxy built on evr
evr-echo is a TCP and Unix-socket echo server, one event loop per core or
supervised worker processes. evr-proxy is a TCP proxy and load balancer:
round-robin or least-connections balancing, failover, backpressure,
half-close and reset propagation, PROXY protocol v1/v2, a Prometheus
/metrics endpoint and splice() relaying. Both drain gracefully on SIGTERM.

This package holds the two programs, their man pages and their systemd
units (a service and a socket for each, for socket activation).")

# Debian wants each package's copyright file and compressed man pages;
# cmake --install leaves both alone (cmake/EvrPackagingStage.cmake).
set(CPACK_PRE_BUILD_SCRIPTS ${PROJECT_SOURCE_DIR}/cmake/EvrPackagingStage.cmake)

include(CPack)
cpack_add_component(lib DISPLAY_NAME "shared library")
cpack_add_component(dev DISPLAY_NAME "development files" DEPENDS lib)
if(EVR_PACKAGE_TOOLS)
  cpack_add_component(tools DISPLAY_NAME "evr-echo and evr-proxy" DEPENDS lib)
endif()

# ---- the package test: tests/package/check.sh (label "package") ----
# It makes the .debs of this build, unpacks them into a scratch root and
# builds a program against them. It needs dpkg (dpkg-deb, dpkg-shlibdeps)
# and a build for the machine's own architecture and C library: not the
# sanitized, -m32 or musl builds of scripts/test.sh.
if(EVR_BUILD_TESTS AND NOT EVR_SANITIZE AND NOT EVR_TEST_WRAPPER)
  find_program(EVR_DPKG_ARCHITECTURE dpkg-architecture)
  set(_evr_multiarch "")
  if(EVR_DPKG_ARCHITECTURE)
    execute_process(COMMAND ${EVR_DPKG_ARCHITECTURE} -qDEB_HOST_MULTIARCH
      OUTPUT_VARIABLE _evr_multiarch OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  endif()
  if(NOT EVR_DPKG_ARCHITECTURE)
    find_program(EVR_DPKG dpkg)
    if(EVR_DPKG)
      message(STATUS "evr package test: needs dpkg-dev (dpkg-architecture, dpkg-shlibdeps): not registered")
    endif()
  elseif(_evr_multiarch AND _evr_multiarch STREQUAL CMAKE_LIBRARY_ARCHITECTURE)
    string(JOIN " " _evr_man_list ${EVR_MAN_PAGES})
    add_test(NAME package
      COMMAND sh ${PROJECT_SOURCE_DIR}/tests/package/check.sh ${PROJECT_BINARY_DIR}
        ${PROJECT_SOURCE_DIR})
    set_tests_properties(package PROPERTIES TIMEOUT 300 LABELS package
      ENVIRONMENT "EVR_CPACK=${CMAKE_CPACK_COMMAND};EVR_CMAKE=${CMAKE_COMMAND};EVR_BUILD_CC=${CMAKE_C_COMPILER};EVR_PACKAGE_LIB=${CPACK_DEBIAN_LIB_PACKAGE_NAME};EVR_PACKAGE_VERSION=${PROJECT_VERSION}-${EVR_PACKAGE_RELEASE};EVR_PACKAGE_TOOLS=${EVR_PACKAGE_TOOLS};EVR_PACKAGE_MAN=${_evr_man_list}")
  endif()
endif()
