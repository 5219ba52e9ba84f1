# cmake/EvrPackagingStage.cmake: run by cpack (CPACK_PRE_BUILD_SCRIPTS) once
# the files of each package are staged, before the packages are made: the
# Debian touches that `cmake --install` has no business with.
#   - each package gets /usr/share/doc/<package>/copyright (the LICENSE);
#   - man pages are compressed (gzip -9n: no name or time stamp inside, so
#     the same page gives the same bytes).

if(NOT CPACK_GENERATOR STREQUAL "DEB")
  return()
endif()
foreach(component IN LISTS CPACK_COMPONENTS_ALL)
  set(root "${CPACK_TEMPORARY_DIRECTORY}/${component}")
  if(NOT IS_DIRECTORY "${root}")
    continue()
  endif()
  string(TOUPPER "${component}" upper)
  set(package "${CPACK_DEBIAN_${upper}_PACKAGE_NAME}")
  file(MAKE_DIRECTORY "${root}/usr/share/doc/${package}")
  configure_file("${CPACK_RESOURCE_FILE_LICENSE}"
    "${root}/usr/share/doc/${package}/copyright" COPYONLY)
  file(GLOB pages "${root}${CPACK_PACKAGING_INSTALL_PREFIX}/share/man/man*/*")
  foreach(page IN LISTS pages)
    if(NOT page MATCHES "\\.gz$")
      execute_process(COMMAND gzip -9nf "${page}" RESULT_VARIABLE rc)
      if(NOT rc EQUAL 0)
        message(FATAL_ERROR "gzip ${page} failed (${rc})")
      endif()
    endif()
  endforeach()
endforeach()
