/*-------------------------------------------------------------------------
 * team.h
 *	  Project teams: which projects a role may reach (team.c).
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_TEAM_H
#define GDPRCRM_TEAM_H

#include "owner_query.h"

extern void team_init(void);
extern bool team_includes(Oid role, int64 project);

/*
 * The project of the person whose id is the subject id in parameter $1
 * (an int8; NULL when there is no such person), or of the person purged
 * with that id (its state keeps the project, erasure.sql), as a scalar
 * expression: the team check's half of a per-subject lookup that must
 * read both in one statement (subject_keys.c, as the tables' owner).
 * people.id and subject_state.subject are the subject id, so the
 * subqueries stay on the node that holds the subject wherever per-subject
 * tables are distributed by subject and co-located.
 */
#define TEAM_SUBJECT_PROJECT_SQL \
	"COALESCE((SELECT p.project_id FROM " GDPRCRM_SCHEMA ".people p" \
	" WHERE p.id OPERATOR(pg_catalog.=) $1)," \
	" (SELECT s.project_id FROM " GDPRCRM_SCHEMA ".subject_state s" \
	" WHERE s.subject OPERATOR(pg_catalog.=) $1))"

#endif							/* GDPRCRM_TEAM_H */
