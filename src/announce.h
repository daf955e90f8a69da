/*-------------------------------------------------------------------------
 * announce.h
 *	  Announcing committed changes to standbys through WAL (announce.c).
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_ANNOUNCE_H
#define GDPRCRM_ANNOUNCE_H

extern void announce_init(void);
extern void announce_keys_destroyed(void);
extern void announce_before_commit(const int64 *subjects, int count);
extern void announce_catch_up(void);

#endif							/* GDPRCRM_ANNOUNCE_H */
