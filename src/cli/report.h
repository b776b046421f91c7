/*
 * A migration's stats as text for people (src/cli/report.c): st is
 * query-migrate's "return" object (or a MIGRATION event's "data"),
 * borrowed.
 */
#ifndef LIVEMIG_CLI_REPORT_H
#define LIVEMIG_CLI_REPORT_H

#include <stddef.h>
#include <stdio.h>

struct json_object;

/* Percent done: of the bytes that had to go so far (sent, re-sent pages
 * included, plus those dirty now), the part sent; 100 once completed. */
int lm_cli_migration_percent(struct json_object *st);
/* One progress line: status, percent, round, elapsed, ETA (remaining at
 * rate bytes/s; rate <= 0: the migration's own estimate), bytes sent and
 * remaining, link rate, dirty rate, expected downtime. */
void lm_cli_progress_line(struct json_object *st, double rate, char *buf, size_t len);
/* "migration STATUS" and every figure, one per line with its unit
 * ("total-time 289 ms", "ram.mbps 12043.2 Mbit/s"). */
void lm_cli_print_report(FILE *f, struct json_object *st);

#endif
