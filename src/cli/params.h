/*
 * The migration parameters, one table (src/cli/params.c): every parameter
 * is defined once there, with its name (QEMU's where QEMU has the same
 * thing), type, unit, range, doc line, and where it lives in the
 * parameters a VM's control socket holds. Everything else comes from the
 * table: the options of `livemig migrate` (--NAME VALUE, and --NAME /
 * --no-NAME for booleans), the checks of `migrate-set-parameters`, the
 * reply of `query-migrate-parameters`, the defaults (the library's
 * lm_migrate_params_default(), plus connect-timeout, which is the control
 * socket's own), and docs/cli.md's parameter list (`livemig migrate
 * --list-parameters`; a test compares the two).
 *
 * A value travels as an int64_t: integers as they are, booleans as 0/1,
 * enumerations as the index of their name in `choices`.
 */
#ifndef LIVEMIG_CLI_PARAMS_H
#define LIVEMIG_CLI_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "livemig/migrate.h"

struct json_object;

/* What a VM's control socket holds: the engine's parameters plus how long
 * `migrate` may take to connect (the engine only ever sees a connected fd). */
/* multifd-channels' default on this host (params.c). */
unsigned lm_cli_default_channels(void);

struct lm_cli_params {
	struct lm_migrate_params mig;
	uint64_t connect_timeout_ms; /* 0: no bound but the kernel's */
};

enum lm_cli_param_type {
	LM_PARAM_INT,  /* a JSON integer; on the command line a decimal number */
	LM_PARAM_RATE, /* a JSON integer of bytes/s; on the command line also 100M, 1Gbit */
	LM_PARAM_BOOL, /* JSON true/false; --NAME and --no-NAME on the command line */
	LM_PARAM_ENUM, /* a JSON string, one of choices */
};

struct lm_cli_param {
	const char *name;
	enum lm_cli_param_type type;
	const char *unit;  /* "ms", "bytes/s", "pages", or "" */
	int64_t min, max;  /* INT, RATE: the range, inclusive */
	int64_t multiple;  /* INT: the value must be a multiple of this (0: any) */
	const char *const *choices; /* ENUM: NULL-terminated */
	const char *metavar; /* the option's argument in --help: "MS", "RATE", ... */
	const char *doc;     /* one line, what it does; 0's meaning included */
	int64_t (*get)(const struct lm_cli_params *p);
	void (*set)(struct lm_cli_params *p, int64_t v);
};

extern const struct lm_cli_param lm_cli_params[];
extern const size_t lm_cli_nparams;

/* The parameter called name, or NULL. */
const struct lm_cli_param *lm_cli_param_find(const char *name);
/* The defaults of every parameter. */
void lm_cli_params_default(struct lm_cli_params *p);
/*
 * A JSON value for parameter d (migrate-set-parameters): *v, or -EINVAL
 * with err saying what is wrong in QEMU's manner ("Parameter
 * 'downtime-limit' expects an integer of 1..2000000 (ms)").
 */
int lm_cli_param_from_json(const struct lm_cli_param *d, struct json_object *val, int64_t *v, char *err,
			   size_t errlen);
/* v as JSON (a new object). */
struct json_object *lm_cli_param_to_json(const struct lm_cli_param *d, int64_t v);
/* An option's argument (`livemig migrate --NAME ARG`): *v, or -EINVAL with
 * err saying what is wrong. */
int lm_cli_param_parse(const struct lm_cli_param *d, const char *arg, int64_t *v, char *err,
		       size_t errlen);
/* v as text: "300", "true", "switchover". */
void lm_cli_param_format(const struct lm_cli_param *d, int64_t v, char *buf, size_t len);
/* What d accepts, in words: "1..2000000", "true or false", "full, digest or none". */
void lm_cli_param_range(const struct lm_cli_param *d, char *buf, size_t len);
/* The Markdown table docs/cli.md holds (`livemig migrate --list-parameters`). */
void lm_cli_params_markdown(FILE *f);
/* The same as troff paragraphs, for docs/livemig.1
 * (`livemig migrate --list-parameters=man`). */
void lm_cli_params_troff(FILE *f);
/* The options part of `livemig migrate --help`. */
void lm_cli_params_help(FILE *f);

#endif
