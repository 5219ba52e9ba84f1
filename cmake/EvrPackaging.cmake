# cmake/EvrPackaging.cmake: what `cmake --install` puts where.
#
# Every installed file belongs to one component:
#   lib    the shared library
#   dev    headers, static library, libevr.so, evr.pc, the CMake package
# `cmake --install` without --component installs both.

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
# evr.pc names the directories evr is installed in. The prefix is only
# known when installing (`cmake --install --prefix DIR`), so it is written
# then, from a template made here, and holds plain paths:
# `-I/usr/local/include`, not `-I/usr/local/lib/pkgconfig/../../include`.
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
