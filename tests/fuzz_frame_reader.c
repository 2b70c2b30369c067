/* Does the frame reader keep its invariants on arbitrary bytes split at
 * arbitrary points? A libFuzzer target (`make fuzz`); built with
 * -DAMIO_FUZZ_REPLAY it is a plain program that replays corpus files.
 *
 * Input: byte 0 picks max_frame (low 3 bits), the chunk-size range (bits 3-4),
 * and feed() vs read() from a socket (bit 5); bytes 1-2 seed the PRNG that
 * picks chunk sizes and how many frames to hand out between chunks. The rest
 * is the stream. Invariants checked after every call:
 *   - a frame handed out has len <= max_frame, and header + payload equal the
 *     input at the consumed offset (so re-encoding the frames reproduces the
 *     consumed prefix);
 *   - capacity never exceeds max_frame + 4;
 *   - -EMSGSIZE exactly when the next header announces more than max_frame;
 *   - "none yet" (0) exactly when the unconsumed bytes are an incomplete frame;
 *   - at EOF, read() says 0 only with no complete frame left, and next() says
 *     -EPROTO exactly when bytes of an unfinished frame remain. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "amio/frame.h"

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c);  \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const size_t max_frames[8] = {0, 1, 3, 4, 16, 100, 1000, 70000};
static const uint32_t chunk_ranges[4] = {1, 7, 64, 5000};

struct run {
	const uint8_t *in;
	size_t n, max;
	size_t fed;      /* input bytes the reader has taken */
	size_t consumed; /* bytes of the frames handed out, headers included */
	int done;        /* the reader said -EMSGSIZE or -EPROTO: stop */
	int shut;        /* the peer shut down writing: the reader may see EOF */
	int eof;         /* read() returned 0 */
	uint32_t rng;
	struct amio_frame_reader fr;
};

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t rnd(struct run *r)
{
	r->rng ^= r->rng << 13;
	r->rng ^= r->rng >> 17;
	r->rng ^= r->rng << 5;
	return r->rng;
}

/* Is a header over max_frame at the consumed offset? */
static int bad_header_next(const struct run *r)
{
	return r->fed - r->consumed >= 4 && be32(r->in + r->consumed) > r->max;
}

/* Does a complete frame start at the consumed offset? */
static int frame_pending(const struct run *r)
{
	size_t avail = r->fed - r->consumed;

	return avail >= 4 && !bad_header_next(r) && avail - 4 >= be32(r->in + r->consumed);
}

/* Hands out up to `limit` frames, checking each against the input. */
static void take(struct run *r, size_t limit)
{
	struct iovec f;
	int rc;

	for (; limit > 0 && !r->done; limit--) {
		rc = amio_frame_reader_next(&r->fr, &f);
		CHECK(amio_frame_reader_buffered(&r->fr) ==
		      r->fed - r->consumed - (rc == 1 ? 4 + f.iov_len : 0));
		if (rc == 0) {
			CHECK(!frame_pending(r) && !bad_header_next(r));
			CHECK(!r->eof || r->fed == r->consumed);
			return;
		}
		if (rc == -EMSGSIZE || rc == -EPROTO) {
			CHECK(rc == -EMSGSIZE ? bad_header_next(r)
			                      : r->shut && r->fed == r->n && r->fed > r->consumed &&
			                            !frame_pending(r) && !bad_header_next(r));
			CHECK(amio_frame_reader_next(&r->fr, &f) == rc); /* sticky */
			r->done = 1;
			return;
		}
		CHECK(rc == 1);
		CHECK(f.iov_len <= r->max);
		CHECK(r->consumed + 4 + f.iov_len <= r->fed);
		CHECK(be32(r->in + r->consumed) == f.iov_len);
		CHECK(f.iov_len == 0 ||
		      memcmp(f.iov_base, r->in + r->consumed + 4, f.iov_len) == 0);
		r->consumed += 4 + f.iov_len;
	}
}

/* feed() or read() said -EMSGSIZE: only when the bad header is next. */
static void stream_broken(struct run *r)
{
	CHECK(bad_header_next(r));
	take(r, 1);
	CHECK(r->done);
}

static void run_feed(struct run *r, size_t range)
{
	while (r->fed < r->n && !r->done) {
		size_t chunk = 1 + rnd(r) % range;
		ssize_t got;

		chunk = chunk < r->n - r->fed ? chunk : r->n - r->fed;
		got = amio_frame_reader_feed(&r->fr, r->in + r->fed, chunk);
		CHECK(amio_frame_reader_capacity(&r->fr) <= r->max + 4);
		if (got == -EMSGSIZE) {
			stream_broken(r);
			return;
		}
		CHECK(got >= 0 && (size_t)got <= chunk);
		r->fed += (size_t)got;
		if (got == 0) /* only because a complete frame waits in front */
			CHECK(frame_pending(r));
		take(r, got == 0 ? SIZE_MAX : rnd(r) % 4);
	}
	take(r, SIZE_MAX);
}

/* Reads what the socket holds until -EAGAIN (or EOF when at_eof). */
static void read_all(struct run *r, int fd, size_t sent, int at_eof)
{
	for (;;) {
		ssize_t got = amio_frame_reader_read(&r->fr, fd);

		CHECK(amio_frame_reader_capacity(&r->fr) <= r->max + 4);
		if (got == -EMSGSIZE) {
			stream_broken(r);
			return;
		}
		if (got == -EAGAIN || got == 0) {
			CHECK(r->fed == sent && (got == 0) == at_eof);
			CHECK(got == -EAGAIN || !frame_pending(r)); /* EOF after every frame */
			r->eof = got == 0;
			return;
		}
		if (got == -ENOBUFS) {
			CHECK(frame_pending(r));
			take(r, SIZE_MAX);
			continue;
		}
		CHECK(got > 0 && r->fed + (size_t)got <= sent);
		r->fed += (size_t)got;
		take(r, rnd(r) % 4);
	}
}

static void run_read(struct run *r, size_t range)
{
	size_t sent = 0;
	int sv[2];

	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
	while (sent < r->n && !r->done) {
		size_t chunk = 1 + rnd(r) % range;

		chunk = chunk < r->n - sent ? chunk : r->n - sent;
		CHECK(send(sv[1], r->in + sent, chunk, 0) == (ssize_t)chunk);
		sent += chunk;
		read_all(r, sv[0], sent, 0);
	}
	if (!r->done) {
		CHECK(shutdown(sv[1], SHUT_WR) == 0);
		r->shut = 1;
		read_all(r, sv[0], sent, 1);
		take(r, SIZE_MAX);
		CHECK(r->done || amio_frame_reader_read(&r->fr, sv[0]) == 0);
	}
	close(sv[0]);
	close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run r;

	if (size < 3)
		return 0;
	memset(&r, 0, sizeof(r));
	r.max = max_frames[data[0] & 7];
	r.rng = 1u + data[1] + ((uint32_t)data[2] << 8);
	r.in = data + 3;
	r.n = size - 3;
	CHECK(amio_frame_reader_init(&r.fr, r.max) == 0);
	if (data[0] & 0x20 && r.n <= 65536)
		run_read(&r, chunk_ranges[(data[0] >> 3) & 3]);
	else
		run_feed(&r, chunk_ranges[(data[0] >> 3) & 3]);
	if (!r.done) { /* all input taken; what is left is one unfinished frame */
		CHECK(r.fed == r.n);
		CHECK(!frame_pending(&r) && !bad_header_next(&r));
	}
	amio_frame_reader_destroy(&r.fr);
	return 0;
}

#ifdef AMIO_FUZZ_REPLAY
/* Replays the files named on the command line (the seed corpus in CTest). */
int main(int argc, char **argv)
{
	static uint8_t buf[1 << 20];
	int i;

	for (i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		size_t n;

		CHECK(f != NULL);
		n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		LLVMFuzzerTestOneInput(buf, n);
	}
	printf("replayed %d inputs\n", argc - 1);
	return 0;
}
#endif
