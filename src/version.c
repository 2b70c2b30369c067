/* The library's own version, for programs to compare with the headers they were built with. */
#include "amio.h"

unsigned amio_version(void)
{
	return AMIO_VERSION_HEX;
}

const char *amio_version_string(void)
{
	return AMIO_VERSION_STRING;
}
