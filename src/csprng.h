/*-------------------------------------------------------------------------
 * csprng.h
 *	  Fast, fork-safe random bytes for nonces and data keys (csprng.c).
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_CSPRNG_H
#define GDPRCRM_CSPRNG_H

#include <stddef.h>

extern void csprng_fill(void *buf, size_t len);

#endif							/* GDPRCRM_CSPRNG_H */
