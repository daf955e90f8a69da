/*-------------------------------------------------------------------------
 * consent.h
 *	  The purpose-checking row filter and its invalidation (consent.c).
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_CONSENT_H
#define GDPRCRM_CONSENT_H

extern void consent_init(void);
extern void consent_publish(int64 subject);

#endif							/* GDPRCRM_CONSENT_H */
