/*-------------------------------------------------------------------------
 * guc.h
 *	  Every gdprcrm.* setting; definitions and documentation in guc.c.
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_GUC_H
#define GDPRCRM_GUC_H

/* Shell command that prints the root key; NULL or empty for the dev key. */
extern char *gdprcrm_key_command;

extern void guc_init(void);

#endif							/* GDPRCRM_GUC_H */
