/*
 * amio/version.h - the version of the amio headers (compile time) and of the
 * libamio a program runs against (run time).
 *
 * Included by amio.h. The numbers below are project(VERSION) of the top-level
 * CMakeLists.txt; the check_version test fails when the two differ.
 * amio 0.x: the ABI is not frozen (see CHANGELOG.md); compare
 * amio_version() with AMIO_VERSION_HEX at start-up to catch a mismatch.
 */
#ifndef AMIO_VERSION_H
#define AMIO_VERSION_H

#define AMIO_VERSION_MAJOR 0
#define AMIO_VERSION_MINOR 1
#define AMIO_VERSION_PATCH 0

/* The header's version as one number: (major << 16) | (minor << 8) | patch. */
#define AMIO_VERSION_HEX                                                                           \
	((AMIO_VERSION_MAJOR << 16) | (AMIO_VERSION_MINOR << 8) | AMIO_VERSION_PATCH)

/* The header's version as a string literal, e.g. "0.1.0". */
#define AMIO_VERSION__STR2(x) #x
#define AMIO_VERSION__STR(x)  AMIO_VERSION__STR2(x)
#define AMIO_VERSION_STRING                                                                        \
	AMIO_VERSION__STR(AMIO_VERSION_MAJOR)                                                      \
	"." AMIO_VERSION__STR(AMIO_VERSION_MINOR) "." AMIO_VERSION__STR(AMIO_VERSION_PATCH)

/*
 * Compile-time check, usable in #if: 1 when these headers are version
 * major.minor.patch or newer, else 0. minor and patch are below 256.
 *	#if AMIO_VERSION_CHECK(0, 2, 0)
 *	... code for 0.2.0 and later ...
 *	#endif
 */
#define AMIO_VERSION_CHECK(major, minor, patch)                                                    \
	(AMIO_VERSION_HEX >= (((major) << 16) | ((minor) << 8) | (patch)))

#ifndef AMIO_API
#define AMIO_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The version of the libamio the program runs against, which may differ from
 * the headers it was built with (AMIO_VERSION_HEX).
 * Returns: (major << 16) | (minor << 8) | patch, e.g. 0x000100 for 0.1.0.
 * Errors: none.
 * Thread: any thread.
 */
AMIO_API unsigned amio_version(void);

/*
 * The version of the libamio the program runs against, as text.
 * Returns: a static string "major.minor.patch", e.g. "0.1.0"; never NULL.
 * Errors: none.
 * Thread: any thread.
 */
AMIO_API const char *amio_version_string(void);

#ifdef __cplusplus
}
#endif

#endif /* AMIO_VERSION_H */
