/* How close to memcpy does the frame reader go on fed bytes? The same stream
 * of 16 B, 1 KiB and 64 KiB frames is fed through the reader and memcpy'd
 * (same 64 KiB pieces, same volume) in the same run; median of 5 rounds.
 * Usage: frame_bench [MiB per case, default 256]. Prints a Markdown table. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "amio/frame.h"

#define HDR          4u
#define PIECE        65536u     /* bytes per feed() / memcpy() call, like one recv() */
#define STREAM_BYTES (8u << 20) /* larger than L2: both sides read from L3/DRAM */
#define ROUNDS       5
#define MAX_FRAME    (1u << 20)

static volatile size_t sink; /* keeps results alive */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A stream of whole frames of `size` bytes, as close to STREAM_BYTES as fits. */
static unsigned char *make_stream(size_t size, size_t *len, size_t *frames)
{
	size_t i, n = STREAM_BYTES / (HDR + size);
	unsigned char *s = malloc(n * (HDR + size));

	if (!s)
		return NULL;
	for (i = 0; i < n; i++) {
		unsigned char *p = s + i * (HDR + size);

		p[0] = (unsigned char)(size >> 24);
		p[1] = (unsigned char)(size >> 16);
		p[2] = (unsigned char)(size >> 8);
		p[3] = (unsigned char)size;
		memset(p + HDR, (int)i, size);
	}
	*len = n * (HDR + size);
	*frames = n;
	return s;
}

/* Seconds to feed the stream `loops` times and hand out every frame. */
static double time_reader(const unsigned char *s, size_t len, size_t loops, size_t want_frames)
{
	struct amio_frame_reader fr;
	struct iovec f;
	size_t loop, off, frames = 0, bytes = 0;
	double t0;

	if (amio_frame_reader_init(&fr, MAX_FRAME) < 0)
		return -1;
	t0 = now_s();
	for (loop = 0; loop < loops; loop++) {
		for (off = 0; off < len; off += PIECE) {
			const unsigned char *p = s + off;
			size_t n = len - off < PIECE ? len - off : PIECE;

			while (n > 0) {
				ssize_t got = amio_frame_reader_feed(&fr, p, n);

				if (got < 0)
					return -1;
				p += got;
				n -= (size_t)got;
				while (amio_frame_reader_next(&fr, &f) == 1) {
					frames++;
					bytes += f.iov_len;
				}
			}
		}
	}
	t0 = now_s() - t0;
	amio_frame_reader_destroy(&fr);
	sink = bytes;
	return frames == want_frames ? t0 : -1;
}

/* Seconds to memcpy the same pieces into one piece-sized buffer. */
static double time_memcpy(const unsigned char *s, size_t len, size_t loops)
{
	static unsigned char dst[PIECE];
	size_t loop, off;
	double t0 = now_s();

	for (loop = 0; loop < loops; loop++) {
		for (off = 0; off < len; off += PIECE) {
			memcpy(dst, s + off, len - off < PIECE ? len - off : PIECE);
			__asm__ volatile("" : : "r"(dst) : "memory"); /* the copy must happen */
		}
	}
	sink = dst[0];
	return now_s() - t0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static int bench(size_t size, size_t volume)
{
	double tr[ROUNDS], tm[ROUNDS], r, m, gb;
	size_t len, frames, loops, i;
	unsigned char *s = make_stream(size, &len, &frames);

	if (!s)
		return -1;
	loops = volume / len ? volume / len : 1;
	for (i = 0; i < ROUNDS; i++) { /* interleaved, so drift hits both alike */
		tr[i] = time_reader(s, len, loops, frames * loops);
		tm[i] = time_memcpy(s, len, loops);
		if (tr[i] < 0) {
			free(s);
			return -1;
		}
	}
	qsort(tr, ROUNDS, sizeof(double), cmp_double);
	qsort(tm, ROUNDS, sizeof(double), cmp_double);
	r = tr[ROUNDS / 2];
	m = tm[ROUNDS / 2];
	gb = (double)len * (double)loops / 1e9;
	printf("| %7zu B | %15.3e | %15.3e | %11.2f | %11.2f | %13.2f |\n", size,
	       (double)(frames * loops) / r, (double)(frames * loops) / m, gb / r, gb / m, m / r);
	free(s);
	return 0;
}

int main(int argc, char **argv)
{
	static const size_t sizes[] = {16, 1024, 65536};
	size_t volume = (argc > 1 ? strtoull(argv[1], NULL, 0) : 256) << 20;
	size_t i;

	printf("frame reader (feed + next) vs memcpy of the same bytes in %u-byte pieces, "
	       "%zu MiB per case, median of %d\n\n",
	       PIECE, volume >> 20, ROUNDS);
	printf("| frame     | reader frames/s | memcpy frames/s | reader GB/s | memcpy GB/s | "
	       "reader/memcpy |\n");
	printf("|-----------|----------------:|----------------:|------------:|------------:|"
	       "--------------:|\n");
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		if (bench(sizes[i], volume) < 0) {
			fprintf(stderr, "frame_bench: reader failed at %zu-byte frames\n",
			        sizes[i]);
			return 1;
		}
	}
	return 0;
}
