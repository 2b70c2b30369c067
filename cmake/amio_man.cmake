# Man pages: one man3 page per AMIO_API function, generated at build time from
# the header comments (summary, Returns:, Errors:, Ownership:, Thread:) by
# scripts/gen_man.py, so they follow the headers; amio(7) is man/amio.7.
# Sets AMIO_MAN_DIR and the target amio_man (part of all).
find_package(Python3 COMPONENTS Interpreter)
if(NOT Python3_Interpreter_FOUND)
  message(WARNING "amio: python3 not found, so no man pages are generated or installed")
  return()
endif()
set(AMIO_MAN_DIR ${PROJECT_BINARY_DIR}/man)
set(AMIO_MAN_HEADERS ${PROJECT_SOURCE_DIR}/include/amio/frame.h)
if(NOT AMIO_FRAME_ONLY)
  list(PREPEND AMIO_MAN_HEADERS ${PROJECT_SOURCE_DIR}/include/amio.h
       ${PROJECT_SOURCE_DIR}/include/amio/version.h)
endif()
string(TIMESTAMP _amio_man_date "%Y-%m-%d" UTC) # honours SOURCE_DATE_EPOCH
add_custom_command(
  OUTPUT ${AMIO_MAN_DIR}/man3.stamp
  COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/scripts/gen_man.py
          --out ${AMIO_MAN_DIR}/man3 --version ${PROJECT_VERSION} --date ${_amio_man_date}
          --strerror ${PROJECT_SOURCE_DIR}/src/strerror.c ${AMIO_MAN_HEADERS}
  COMMAND ${CMAKE_COMMAND} -E touch ${AMIO_MAN_DIR}/man3.stamp
  DEPENDS ${PROJECT_SOURCE_DIR}/scripts/gen_man.py ${AMIO_MAN_HEADERS}
          ${PROJECT_SOURCE_DIR}/src/strerror.c
  COMMENT "Generating man3 pages from the header comments"
  VERBATIM)
add_custom_target(amio_man ALL DEPENDS ${AMIO_MAN_DIR}/man3.stamp)
