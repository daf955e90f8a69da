/*-------------------------------------------------------------------------
 * subject_hash.h
 *	  The hash of a subject id, for the per-backend tables keyed by subject
 *	  (the key cache in subject_keys.c, the state copy in subject_state.c).
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_SUBJECT_HASH_H
#define GDPRCRM_SUBJECT_HASH_H

/*
 * splitmix64's finaliser: subject ids are sequential, and open addressing
 * needs their low bits spread over the whole table.
 */
static inline uint32
hash_subject(int64 subject)
{
	uint64		h = (uint64) subject;

	h ^= h >> 30;
	h *= UINT64CONST(0xbf58476d1ce4e5b9);
	h ^= h >> 27;
	h *= UINT64CONST(0x94d049bb133111eb);
	h ^= h >> 31;
	return (uint32) h;
}

#endif							/* GDPRCRM_SUBJECT_HASH_H */
