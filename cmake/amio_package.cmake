# make package: two Debian packages through CPack, from the components of
# cmake/amio_install.cmake:
#   libamio0     the shared libraries (libamio.so.0, libamio_frame.so.0)
#   libamio-dev  headers, .so links, static libraries, CMake and pkg-config
#                files, man pages
# Packages install under CMAKE_INSTALL_PREFIX (make package configures /usr),
# the prefix the pkg-config files name.
set(CPACK_PACKAGE_NAME amio)
set(CPACK_PACKAGE_VENDOR "the amio authors")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Poller/Registrar event model (after Amy) on io_uring for C11")
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_GENERATOR DEB)
set(CPACK_COMPONENTS_ALL runtime dev)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(AMIO_PACKAGE_MAINTAINER "the amio authors" CACHE STRING "Maintainer field of the Debian packages")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${AMIO_PACKAGE_MAINTAINER}")
if(NOT CMAKE_BUILD_TYPE STREQUAL "Debug")
  set(CPACK_STRIP_FILES ON)
endif()

set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME libamio0)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION libs)
set(CPACK_COMPONENT_RUNTIME_DESCRIPTION
    "Poller/Registrar event model on io_uring for C11 (shared libraries)")
# Dependencies: dpkg-shlibdeps (dpkg-dev, and file) reads them from the libraries
# (libc6, liburing2); ck is inline today but a link dependency of amio.pc.
# Without dpkg-shlibdeps: what Debian 12 builds need.
find_program(AMIO_DPKG_SHLIBDEPS dpkg-shlibdeps)
if(AMIO_DPKG_SHLIBDEPS)
  set(CPACK_DEBIAN_RUNTIME_PACKAGE_SHLIBDEPS ON)
  set(CPACK_DEBIAN_RUNTIME_PACKAGE_DEPENDS "libck0 (>= 0.7.1)")
else()
  set(CPACK_DEBIAN_RUNTIME_PACKAGE_DEPENDS "libc6 (>= 2.34), liburing2 (>= 2.3), libck0 (>= 0.7.1)")
endif()
# shlibs file and ldconfig trigger (needs file and readelf); 0.x has no stable
# ABI, so dependants need this exact version.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY "=")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libamio-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_COMPONENT_DEV_DESCRIPTION
    "Poller/Registrar event model on io_uring for C11 (headers, static libraries, man pages)")
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "libamio0 (= ${PROJECT_VERSION}), liburing-dev (>= 2.3), libck-dev (>= 0.7.1)")

set(CPACK_SOURCE_IGNORE_FILES "/build/;/build-;/\\\\.git/")
include(CPack)
