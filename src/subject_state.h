/*-------------------------------------------------------------------------
 * subject_state.h
 *	  The state of each data subject: consent, objections, restriction,
 *	  trash, erasure; this backend's copy of it, and the announcement of changes
 *	  to every backend (subject_state.c).
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_SUBJECT_STATE_H
#define GDPRCRM_SUBJECT_STATE_H

/*
 * One subject's state.  A subject without one has given no consent, made
 * no objection, and is neither restricted, trashed nor erased.
 */
typedef struct SubjectState
{
	int64		subject;
	uint64		consented;		/* one bit per purpose */
	uint64		objected;		/* one bit per purpose (Art. 21) */
	bool		restricted;		/* restriction of processing (Art. 18) */
	bool		erased;
	bool		trashed;		/* in the trash, or purged (then erased too) */
	int64		project;		/* recorded with the trash; 0: not known */
} SubjectState;

/*
 * Published instead of a subject when the purposes changed, which every
 * decision depends on (consent.c reads them again).
 */
#define SUBJECT_STATE_PURPOSES 0

/* What subject_state_catch_up read again. */
typedef struct SubjectStateChanges
{
	bool		reloaded;		/* every state, after none or a gap */
	int			count;			/* else these subjects' (0: none) */
	int64	   *subjects;		/* palloc'd; may hold SUBJECT_STATE_PURPOSES */
} SubjectStateChanges;

extern void subject_state_init(void);
extern void subject_state_catch_up(SubjectStateChanges *changes);
extern const SubjectState *subject_state_get(int64 subject);
extern const SubjectState *subject_state_current(int64 subject);
extern const SubjectState *subject_state_next(uint32 *position);
extern uint32 subject_state_count(void);
extern int64 subject_state_max_subject(void);
extern void subject_state_publish(int64 subject);
extern void subject_state_record_erasure(int64 subject);

#endif							/* GDPRCRM_SUBJECT_STATE_H */
