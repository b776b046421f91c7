/*
 * The convergence policy: after each round, another round, get the
 * destination ready, switch over, or give up. A pure function of what the
 * sender measured, so that every decision can be tested from a table.
 *
 * The pause it predicts is what a switchover now would cost, each part as
 * measured on this migration:
 *   - one more harvest (the last count's cost, sync_s);
 *   - the pages dirty now, at the stop-and-copy's measured bandwidth;
 *   - one round trip: the pause ends when the destination's RESULT is
 *     back (the shortest round trip seen on this connection, rtt_s);
 *   - the workload's own part, as it measured it (workload_s): a VMM
 *     stopping its vCPUs, saving their state and loading it on the other
 *     side, a few hundred microseconds here.
 * What it leaves out (the destination's digest check, threads waking up)
 * shows in the report's downtime breakdown.
 *
 * A guest that dirties faster than the link carries never fits; with
 * auto-converge the answer is then another round with the vCPUs slowed
 * further (throttle_pct), until the dirty rate fits.
 *
 * The destination must be ready before the pause (a VMM that builds its VM
 * on PREPARE can take tens of milliseconds, seconds for a huge guest),
 * and the guest keeps dirtying memory meanwhile. So the first time a
 * switchover would be chosen the answer is PREPARE instead; the sender
 * waits for READY, counts again and asks again, and the pages dirtied
 * while the destination got ready are judged like any others.
 *
 * With post-copy allowed, a guest that does not fit moves to the
 * destination with its dirty pages still here (they follow on demand and
 * in the background) as soon as pre-copy is seen not to converge: the
 * guest dirties more than half of what the link carries (so rounds cannot
 * shrink what is left), or the rounds or the time ran out; or after
 * postcopy_after rounds if the user said so; or when the user asks (these
 * two switch even when an ordinary switchover would fit). It
 * comes before throttling: post-copy costs the guest page waits for a few
 * seconds, a throttle costs it most of its CPU for as long as it takes.
 */
#include "migrate/converge.h"

#include "livemig/migrate.h"

const char *lm__conv_act_name(enum lm__conv_act a)
{
	switch (a) {
	case LM__CONV_ROUND:
		return "round";
	case LM__CONV_PREPARE:
		return "prepare";
	case LM__CONV_SWITCHOVER:
		return "switchover";
	case LM__CONV_CANCEL:
		return "cancel";
	case LM__CONV_POSTCOPY:
		return "postcopy";
	}
	return "?";
}

void lm__converge(const struct lm__conv_in *in, struct lm__conv_out *out)
{
	double copy_s = in->bw > 0 ? (double)in->remaining * LM_PAGE_SIZE / in->bw : 0;
	out->expected_s = in->sync_s + in->rtt_s + in->workload_s + copy_s;
	out->forced = false;
	out->throttle_pct = in->throttle_pct;
	bool last_round = in->max_rounds && in->round >= in->max_rounds;
	bool out_of_time = in->max_time_s > 0 && in->elapsed_s >= in->max_time_s;
	out->last = last_round || out_of_time;
	enum lm__conv_act go = in->prepared ? LM__CONV_SWITCHOVER : LM__CONV_PREPARE;

	/* The user's own request (migrate-start-postcopy, postcopy-after)
	 * switches whether or not the pause would fit; the policy's only
	 * when it would not. */
	bool pc_asked = in->postcopy && (in->postcopy_now || (in->postcopy_after && in->round >= in->postcopy_after));
	bool pc_due = pc_asked || (in->postcopy && !in->postcopy_after &&
				   (out->last || (in->bw > 0 && in->dirty_rate * LM_PAGE_SIZE > in->bw / 2)));
	/*
	 * Until the destination said READY, the round trip may be known only
	 * from HELLO to ACCEPT, which includes the destination's own setup
	 * (seconds when it builds a huge VM then): whether a pause fits is
	 * judged without it, so that the destination is asked to get ready
	 * (PREPARE), and READY measures the round trip again. The published
	 * estimate keeps every part.
	 */
	double judged = in->prepared ? out->expected_s : out->expected_s - in->rtt_s;
	if ((judged > in->limit_s || pc_asked) && pc_due) {
		/* The post-copy pause carries no pages: the harvest, the list
		 * of dirty pages, the destination dropping its stale copies of
		 * them, a round trip and the workload's part. */
		out->expected_s = in->sync_s + in->rtt_s + in->workload_s +
				  (double)in->remaining * LM__CONV_PC_PAGE_S;
		out->forced = out->last;
		out->act = in->prepared ? LM__CONV_POSTCOPY : LM__CONV_PREPARE;
		return;
	}
	if (judged <= in->limit_s) {
		/*
		 * It fits. Another round still pays when it would leave clearly
		 * less behind: copying the remaining pages takes copy_s, and a
		 * round costs fixed_s beyond its pages (at least one harvest,
		 * sync_s), during which the guest dirties
		 * rate * (copy_s + fixed_s) pages. While that is under half of
		 * what remains the rounds shrink geometrically and each costs
		 * less than the last, so the pause gets shorter for little
		 * extra total time. No round leaves less than what the guest
		 * dirties during its fixed part: with the bitmap log of a
		 * 256 GiB guest a round cost 12-20 ms whatever it carried
		 * (two harvests of 4 ms and the scans), the guest dirtied 200-300
		 * pages meanwhile, and rounds that tried to get under 64 ran
		 * until max-rounds.
		 */
		double fixed = in->fixed_s > in->sync_s ? in->fixed_s : in->sync_s;
		double next_left = in->dirty_rate * (copy_s + fixed);
		bool more = in->remaining > LM__CONV_CONVERGED_PAGES && next_left < (double)in->remaining / 2 &&
			    !last_round;
		out->act = more ? LM__CONV_ROUND : go;
		return;
	}
	if (out->last) {
		/* With the guard, a pause predicted over the limit is never
		 * taken: the migration is cancelled and the guest runs on. */
		out->forced = true;
		out->act = in->cancel || in->guard ? LM__CONV_CANCEL : go;
		return;
	}
	out->act = LM__CONV_ROUND;
	/*
	 * Not converging, rounds left. With auto-converge the vCPUs are slowed
	 * when the guest dirties more than half of what the link carries (as
	 * QEMU decides; from the second round on, once both rates were
	 * measured): first to cpu-throttle-initial, then by
	 * cpu-throttle-increment per round, up to 99%.
	 */
	if (in->auto_converge && in->round >= 2 && in->bw > 0 &&
	    in->dirty_rate * LM_PAGE_SIZE > in->bw / 2) {
		unsigned t = in->throttle_pct ? in->throttle_pct + in->throttle_increment : in->throttle_initial;
		out->throttle_pct = t > LM__CONV_THROTTLE_MAX ? LM__CONV_THROTTLE_MAX : t;
	}
}

/*
 * The guard's check inside the pause, after the final harvest and again
 * while the last pages go out: the pause so far plus what finishing still
 * costs (the pages left at the measured bandwidth, the RESULT round trip,
 * the rest of the workload's part) must fit the limit. If not, the sender
 * resumes the guest before anything of the pause is final (its device
 * state is held back until the pages are out) and goes on with rounds.
 */
bool lm__converge_guard_ok(const struct lm__guard_in *in)
{
	double copy_s = in->bw > 0 ? (double)in->remaining * LM_PAGE_SIZE / in->bw : 0;
	double left = in->workload_left_s > 0 ? in->workload_left_s : 0;
	return in->elapsed_s + copy_s + in->rtt_s + left <= in->limit_s;
}
