/*
 * livemig run: boot a Multiboot guest image in the project's KVM VMM,
 * print its serial console, serve the control socket, and exit with the
 * guest's poweroff status.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/control.h"
#include "livemig/vmm.h"

#define MAX_MEM (16ull << 40)

static void usage(FILE *f)
{
	fprintf(f,
		"usage: livemig run GUEST.ELF [options]\n"
		"\n"
		"Boots a Multiboot (v1) ELF guest image in a KVM virtual machine.\n"
		"The guest's serial console (COM1) goes to stdout unless --console is given.\n"
		"Exits with the guest's poweroff status (0 for the guest image's normal\n"
		"power-off); %d after the VM migrated away (livemig migrate: the guest runs at\n"
		"the destination); 1 if the VM failed, 2 for bad usage.\n"
		"\n"
		"options:\n"
		"  --mem SIZE        guest RAM, e.g. 512M, 2G, 1T (default 512M; 2M..16T)\n"
		"  --cpus N          vCPUs, 1..%d (default 1)\n"
		"  --append STRING   the guest's command line (e.g. \"workload=hotset rate=50M\")\n"
		"  --console FILE    write the guest's serial output to FILE instead\n"
		"  --control PATH    serve the JSON control socket (QMP-like) at PATH\n"
		"  --slot-size SIZE  split RAM into KVM memory slots of at most SIZE (default:\n"
		"                    1G while that makes at most %d slots, else the smallest\n"
		"                    power of two that does: 1T in 4G slots)\n"
		"  --dirty-source auto|ring|log\n"
		"                    how KVM reports the guest's writes to a migration: its\n"
		"                    per-vCPU dirty ring (cost follows the pages written) or\n"
		"                    the per-slot dirty bitmap (cost grows with the guest's\n"
		"                    size); fixed when the VM is created (default auto: the\n"
		"                    ring when the kernel has it)\n"
		"  --dirty-ring-size N\n"
		"                    ring entries per vCPU, a power of two >= 65536 (default\n"
		"                    %u within %llu MiB for all vCPUs; QEMU: dirty-ring-size)\n"
		"  --paused          create the VM but do not run it until `cont` (like QEMU -S)\n"
		"  -h, --help        this text\n",
		LM_CLI_EXIT_MIGRATED, LM_VM_MAX_CPUS, LM_VM_AUTO_SLOTS, LM_VM_RING_ENTRIES_DEFAULT,
		(unsigned long long)(LM_VM_RING_BUDGET >> 20));
}

static int bad(const char *fmt, const char *arg)
{
	fprintf(stderr, "livemig run: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(see livemig run --help)\n");
	return 2;
}

static int parse_cpus(const char *s, unsigned *out)
{
	char *end;
	errno = 0;
	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v < 1 || v > LM_VM_MAX_CPUS)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

int lm_cli_run(int argc, char **argv)
{
	enum { OPT_MEM = 256, OPT_CPUS, OPT_APPEND, OPT_CONSOLE, OPT_CONTROL, OPT_SLOT, OPT_PAUSED, OPT_DIRTY,
	       OPT_RING };
	static const struct option opts[] = {
	    {"mem", required_argument, NULL, OPT_MEM},
	    {"cpus", required_argument, NULL, OPT_CPUS},
	    {"append", required_argument, NULL, OPT_APPEND},
	    {"console", required_argument, NULL, OPT_CONSOLE},
	    {"control", required_argument, NULL, OPT_CONTROL},
	    {"slot-size", required_argument, NULL, OPT_SLOT},
	    {"paused", no_argument, NULL, OPT_PAUSED},
	    {"dirty-source", required_argument, NULL, OPT_DIRTY},
	    {"dirty-ring-size", required_argument, NULL, OPT_RING},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct lm_vm_config cfg = {
	    .mem_size = 512ull << 20, .ncpus = 1, .console_fd = STDOUT_FILENO};
	const char *console = NULL, *control = NULL, *kernel = NULL;
	bool paused = false;
	int c;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_MEM:
			if (lm_cli_parse_size(optarg, &cfg.mem_size) < 0)
				return bad("bad --mem size '%s' (use e.g. 512M, 2G, 1T)", optarg);
			if (cfg.mem_size < (2ull << 20) || cfg.mem_size > MAX_MEM)
				return bad("--mem %s is out of range (2M..16T)", optarg);
			if (cfg.mem_size % 4096)
				return bad("--mem %s is not a multiple of 4K", optarg);
			break;
		case OPT_CPUS:
			if (parse_cpus(optarg, &cfg.ncpus) < 0) {
				fprintf(stderr, "livemig run: bad --cpus '%s' (1..%d)\n", optarg,
					LM_VM_MAX_CPUS);
				return 2;
			}
			break;
		case OPT_APPEND:
			cfg.cmdline = optarg;
			if (strlen(optarg) > LM_VM_CMDLINE_MAX) {
				fprintf(stderr,
					"livemig run: --append is %zu bytes; the guest command line holds at most %d\n"
					"(see livemig run --help)\n",
					strlen(optarg), LM_VM_CMDLINE_MAX);
				return 2;
			}
			break;
		case OPT_CONSOLE:
			console = optarg;
			break;
		case OPT_CONTROL:
			control = optarg;
			break;
		case OPT_SLOT:
			if (lm_cli_parse_size(optarg, &cfg.slot_size) < 0 || cfg.slot_size == 0)
				return bad("bad --slot-size '%s'", optarg);
			if (cfg.slot_size % (2ull << 20))
				return bad("--slot-size %s is not a multiple of 2M", optarg);
			break;
		case OPT_PAUSED:
			paused = true;
			break;
		case OPT_DIRTY:
			if (lm_vm_dirty_mode_parse(optarg, &cfg.dirty_mode) < 0)
				return bad("bad --dirty-source '%s' (auto, ring or log)", optarg);
			break;
		case OPT_RING:
			if (lm_cli_parse_ring_size(optarg, &cfg.dirty_ring_entries) < 0)
				return bad("bad --dirty-ring-size '%s' (a power of two, 65536..1048576)", optarg);
			break;
		case 'h':
			usage(stdout);
			return 0;
		case ':':
			return bad("option '%s' needs a value", argv[optind - 1]);
		default:
			return bad("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return bad("%s", "no guest image given");
	kernel = argv[optind];
	if (optind + 1 < argc)
		return bad("unexpected argument '%s'", argv[optind + 1]);

	int ret = 1, r;
	struct lm_vm *vm = NULL;
	int console_fd = -1;

	if (console) {
		console_fd = lm_cli_open_console("run", console);
		if (console_fd < 0)
			return 1;
		cfg.console_fd = console_fd;
	}
	cfg.kernel = kernel;
	if (lm_cli_check_host("run", cfg.mem_size) < 0)
		goto out;
	/* Before any thread exists, so that every thread inherits the mask
	 * and only the serve loop's signal thread takes them. */
	lm_cli_block_signals();
	r = lm_vm_new(&cfg, &vm);
	if (r < 0) {
		const char *what = r == -ENOEXEC  ? " (not a Multiboot ELF image)"
				   : r == -EISDIR ? " (a guest image is a Multiboot ELF file)"
				   : r == -E2BIG  ? " (the image does not fit in guest RAM, or the command line in its page)"
				   : r == -ENODEV ? " (/dev/kvm missing)"
				   : r == -EOPNOTSUPP ? " (this kernel has no KVM dirty ring: use --dirty-source log)"
				   : r == -EINVAL && cfg.slot_size > LM_VM_MAX_SLOT_SIZE ? " (--slot-size above 4T)"
						  : "";
		fprintf(stderr, "livemig run: cannot create the VM for %s: %s%s\n", kernel,
			lm_strerror(r), what);
		goto out;
	}
	if (paused && (r = lm_vm_pause(vm)) < 0) {
		fprintf(stderr, "livemig run: cannot pause the VM: %s\n", lm_strerror(r));
		goto out;
	}
	struct lm_cli_ctl ctl;
	if (lm_cli_ctl_open("run", control, &ctl) < 0)
		goto out;
	ret = lm_cli_serve_vm("run", vm, &ctl, LM_SERVE_BOOTED);
out:
	lm_vm_free(vm);
	if (console_fd >= 0)
		close(console_fd);
	return ret;
}
