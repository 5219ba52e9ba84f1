# cmake/EvrManPage.cmake: turn one of the Markdown manual pages in docs/
# into a roff man page. Run in script mode by the `man` target
# (cmake/EvrPackaging.cmake):
#
#   cmake -DMD2MAN=/usr/bin/go-md2man -DSRC=docs/evr-echo.md -DDST=evr-echo.1
#         -DVERSION=0.1.0 -DPAGES="evr-echo.md=evr-echo(1);..." [-DGIT=/usr/bin/git]
#         -P EvrManPage.cmake
#
# The Markdown stays the one source: it reads well on a forge and in an
# editor, and only these changes are made on the way to go-md2man:
#   - the title line "# name(N)" becomes go-md2man's title heading,
#     "# name N DATE "evr VERSION" MANUAL", which go-md2man turns into .TH;
#   - a link to another manual page (PAGES: "file.md=name(N)") becomes
#     **name**(N), the man(7) way of naming a page;
#   - a link to another document in docs/ becomes its path in the sources,
#     docs/file.md, in italics (a man page cannot follow a relative link);
#   - after .TH, hyphenation is turned off (go-md2man's .nh comes before
#     .TH, which turns it on again) and lines are left-aligned: option names
#     and code are never split, and a long one (a metric name) leaves a
#     ragged line, not a stretched one.
# DATE is SOURCE_DATE_EPOCH's date when that is set, else the date of the
# last commit that changed the Markdown file (GIT: the git program, when
# the sources are a git checkout), else the file's modification date: the
# date the page was last changed, the same at every rebuild.

foreach(v MD2MAN SRC DST VERSION)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "EvrManPage.cmake: ${v} is not set")
  endif()
endforeach()

file(READ "${SRC}" md)

# The title line.
if(NOT md MATCHES "^# ([A-Za-z0-9_.-]+)\\(([0-9])\\)\n")
  message(FATAL_ERROR "${SRC}: the first line must be \"# name(section)\"")
endif()
set(name "${CMAKE_MATCH_1}")
set(section "${CMAKE_MATCH_2}")
set(date "")
if(DEFINED ENV{SOURCE_DATE_EPOCH})
  string(TIMESTAMP date "%Y-%m-%d" UTC)
elseif(GIT)
  get_filename_component(srcdir "${SRC}" DIRECTORY)
  execute_process(COMMAND "${GIT}" log -1 --format=%cs -- "${SRC}"
    WORKING_DIRECTORY "${srcdir}" OUTPUT_VARIABLE date
    OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(NOT date MATCHES "^[0-9]+-[0-9]+-[0-9]+$")
    set(date "") # not a checkout, or the file is not committed yet
  endif()
endif()
if(NOT date)
  file(TIMESTAMP "${SRC}" date "%Y-%m-%d" UTC)
endif()
if(section STREQUAL "1")
  set(manual "User Commands")
elseif(section STREQUAL "3")
  set(manual "Library Functions Manual")
else()
  set(manual "evr")
endif()
string(REGEX REPLACE "^# [^\n]*\n"
  "# ${name} ${section} \"${date}\" \"evr ${VERSION}\" \"${manual}\"\n" md "${md}")

# Links. A link's text holds no "]" and its target no ")" in these files.
string(REGEX MATCHALL "\\[[^]\n]*\\]\\([^)\n]*\\)" links "${md}")
list(REMOVE_DUPLICATES links)
foreach(link IN LISTS links)
  if(NOT link MATCHES "^\\[(.*)\\]\\((.*)\\)$")
    continue()
  endif()
  set(text "${CMAKE_MATCH_1}")
  set(target "${CMAKE_MATCH_2}")
  if(target MATCHES "^[a-z]+:")
    continue() # an absolute URL: go-md2man writes it after the text
  endif()
  string(REGEX REPLACE "#.*" "" file "${target}")
  set(page "")
  foreach(p IN LISTS PAGES)
    if(p MATCHES "^([^=]+)=(.+)\\(([0-9])\\)$" AND CMAKE_MATCH_1 STREQUAL file)
      set(page "**${CMAKE_MATCH_2}**(${CMAKE_MATCH_3})")
    endif()
  endforeach()
  if(page)
    set(repl "${page}")
  elseif(file MATCHES "\\.md$")
    get_filename_component(base "${file}" NAME)
    if(text MATCHES "\\.md$")
      set(repl "*docs/${base}*")
    else()
      set(repl "${text} (*docs/${base}*)")
    endif()
  else()
    set(repl "${text}")
  endif()
  string(REPLACE "${link}" "${repl}" md "${md}")
endforeach()

get_filename_component(outdir "${DST}" DIRECTORY)
file(MAKE_DIRECTORY "${outdir}")
file(WRITE "${DST}.md" "${md}")
execute_process(COMMAND "${MD2MAN}" -in "${DST}.md" -out "${DST}.tmp"
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${MD2MAN} failed on ${SRC} (${rc})")
endif()
file(READ "${DST}.tmp" roff)
string(REGEX REPLACE "(\n\\.TH [^\n]*\n)" "\\1.nh\n.ad l\n" roff "${roff}")
file(WRITE "${DST}" "${roff}")
file(REMOVE "${DST}.tmp" "${DST}.md")
