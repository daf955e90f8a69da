/*-------------------------------------------------------------------------
 * int64_order.h
 *	  The qsort()/bsearch() order of int64 values (subject and project
 *	  ids), shared by the modules that sort them.
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_INT64_ORDER_H
#define GDPRCRM_INT64_ORDER_H

static inline int
int64_order(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

#endif							/* GDPRCRM_INT64_ORDER_H */
