/*
 * A program built against an installed amio, the way a user builds one
 * (check_consumer, check_package): the version header against the library,
 * a 1 ms timer through a poller and a registrar, one frame through a reader.
 * Exit 0 when all pass, or when io_uring cannot be set up here (printed;
 * exit 1 instead with AMIO_REQUIRE_IO_URING=1); 1 on any failure.
 */
#include <amio.h>
#include <amio/frame.h>
#include <amio/version.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !AMIO_VERSION_CHECK(0, 1, 0)
#error "AMIO_VERSION_CHECK: the headers are older than 0.1.0"
#endif
#if !AMIO_VERSION_CHECK(AMIO_VERSION_MAJOR, AMIO_VERSION_MINOR, AMIO_VERSION_PATCH)
#error "AMIO_VERSION_CHECK: the headers' own version must pass"
#endif
#if AMIO_VERSION_CHECK(AMIO_VERSION_MAJOR, AMIO_VERSION_MINOR, AMIO_VERSION_PATCH + 1)
#error "AMIO_VERSION_CHECK: a newer patch release must not pass"
#endif
#if AMIO_VERSION_CHECK(AMIO_VERSION_MAJOR + 1, 0, 0)
#error "AMIO_VERSION_CHECK: a newer major release must not pass"
#endif

static int failed(const char *what)
{
	fprintf(stderr, "consumer: FAILED: %s\n", what);
	return 1;
}

static int check_version(void)
{
	char expect[32];
	unsigned v = amio_version();

	snprintf(expect, sizeof(expect), "%d.%d.%d", AMIO_VERSION_MAJOR, AMIO_VERSION_MINOR,
	         AMIO_VERSION_PATCH);
	if (v != AMIO_VERSION_HEX)
		return failed("amio_version() differs from AMIO_VERSION_HEX");
	if ((v >> 16) != AMIO_VERSION_MAJOR || ((v >> 8) & 0xff) != AMIO_VERSION_MINOR ||
	    (v & 0xff) != AMIO_VERSION_PATCH)
		return failed("amio_version() is not (major << 16 | minor << 8 | patch)");
	if (strcmp(amio_version_string(), expect) != 0 || strcmp(AMIO_VERSION_STRING, expect) != 0)
		return failed(
		    "amio_version_string() or AMIO_VERSION_STRING is not major.minor.patch");
#ifdef AMIO_EXPECT_VERSION
	if (strcmp(expect, AMIO_EXPECT_VERSION) != 0)
		return failed("amio/version.h differs from the project version");
#endif
	printf("consumer: amio %s (header %s)\n", amio_version_string(), AMIO_VERSION_STRING);
	return 0;
}

static int check_frame(void)
{
	static const unsigned char wire[] = {0, 0, 0, 3, 'a', 'b', 'c'};
	struct amio_frame_reader fr;
	struct iovec f;
	int bad;

	if (amio_frame_reader_init(&fr, 1024) != 0)
		return failed("amio_frame_reader_init");
	bad = amio_frame_reader_feed(&fr, wire, sizeof(wire)) != (ssize_t)sizeof(wire) ||
	      amio_frame_reader_next(&fr, &f) != 1 || f.iov_len != 3 ||
	      memcmp(f.iov_base, "abc", 3) != 0 || amio_frame_reader_next(&fr, &f) != 0;
	amio_frame_reader_destroy(&fr);
	return bad ? failed("a frame fed to amio_frame_reader does not come back") : 0;
}

static int check_timer(void)
{
	const char *req = getenv("AMIO_REQUIRE_IO_URING");
	amio_notification n[8];
	amio_registrar *r;
	amio_poller *p;
	int64_t id;
	int tag, seen = 0, rc;

	rc = amio_poller_new(&p, NULL);
	if (rc != 0) {
		printf("consumer: io_uring unavailable (%s): timer not run\n", amio_strerror(rc));
		return req && strcmp(req, "1") == 0 ? failed("AMIO_REQUIRE_IO_URING=1") : 0;
	}
	if (amio_registrar_new(p, 0, &r) != 0) {
		amio_poller_free(p);
		return failed("amio_registrar_new");
	}
	id = amio_set_timeout(r, 1, &tag);
	for (int tries = 0; id > 0 && !seen && tries < 50; tries++) {
		int k = amio_poller_wait(p, n, 8, 100);

		if (k < 0)
			break;
		for (int i = 0; i < k; i++)
			seen |= n[i].id == (uint64_t)id && (n[i].events & AMIO_TIMER) &&
			        n[i].data == &tag;
	}
	amio_registrar_free(r);
	amio_poller_free(p);
	if (!seen)
		return failed("no AMIO_TIMER notification for a 1 ms timeout within 5 s");
	printf("consumer: 1 ms timer fired\n");
	return 0;
}

int main(void)
{
	int bad = check_version();

	bad |= check_frame();
	bad |= check_timer();
	return bad;
}
