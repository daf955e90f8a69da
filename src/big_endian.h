/*-------------------------------------------------------------------------
 * big_endian.h
 *	  Unsigned integers in bytes, most significant first: the order of
 *	  every integer in gdprcrm's formats (the envelope header, envelope.c;
 *	  the associated data of wrapped subject keys, subject_keys.c), so that
 *	  what one machine writes every other reads.
 *
 * Pure C, like envelope.c, so that the fuzzing harness can use it.
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_BIG_ENDIAN_H
#define GDPRCRM_BIG_ENDIAN_H

#include <stddef.h>
#include <stdint.h>

/* Write value to out in bytes bytes (at most 8); higher bits are dropped. */
static inline void
big_endian_put(uint8_t *out, uint64_t value, size_t bytes)
{
	for (size_t i = 0; i < bytes; i++)
		out[i] = (uint8_t) (value >> (8 * (bytes - 1 - i)));
}

/* The value of the bytes bytes (at most 8) at in. */
static inline uint64_t
big_endian_get(const uint8_t *in, size_t bytes)
{
	uint64_t	value = 0;

	for (size_t i = 0; i < bytes; i++)
		value = (value << 8) | in[i];
	return value;
}

#endif							/* GDPRCRM_BIG_ENDIAN_H */
