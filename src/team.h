/*-------------------------------------------------------------------------
 * team.h
 *	  Project teams: which projects a role may reach (team.c).
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_TEAM_H
#define GDPRCRM_TEAM_H

extern void team_init(void);
extern bool team_includes(Oid role, int64 project);

#endif							/* GDPRCRM_TEAM_H */
