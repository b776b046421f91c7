/*
 * Multiboot (v1) loader: ELF32 program headers (or the header's a.out
 * "kludge" addresses for a non-ELF image), an information structure with
 * mem_lower/mem_upper, a memory map, the command line and the loader's
 * name, and the entry state the specification asks for: 32-bit protected
 * mode, flat segments, paging off, EAX = 0x2BADB002, EBX = the info
 * structure.
 *
 * The image is untrusted input like any file: every offset and size is
 * checked against the file and against guest RAM before use.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/vmm_int.h"

#define MB_MAGIC 0x1BADB002u
#define MB_BOOT_MAGIC 0x2BADB002u
#define MB_SEARCH 8192
#define MB_FLAG_AOUT_KLUDGE (1u << 16)
#define MB_MAX_IMAGE (256u << 20)

/* Where the loader puts its own data: low memory below 640 KiB. */
#define INFO_ADDR 0x8000u
#define MMAP_ADDR 0x8100u
#define NAME_ADDR 0x8400u
#define CMDLINE_ADDR 0x9000u
#define LOADER_END 0x10000u
#define CMDLINE_MAX (LOADER_END - CMDLINE_ADDR)

struct mb_header {
	uint32_t magic, flags, checksum;
	uint32_t header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr;
};

struct mb_info {
	uint32_t flags;
	uint32_t mem_lower, mem_upper;
	uint32_t boot_device;
	uint32_t cmdline;
	uint32_t mods_count, mods_addr;
	uint32_t syms[4];
	uint32_t mmap_length, mmap_addr;
	uint32_t drives_length, drives_addr;
	uint32_t config_table;
	uint32_t boot_loader_name;
};

struct mb_mmap_entry {
	uint32_t size;
	uint64_t addr, len;
	uint32_t type;
} __attribute__((packed));

static int read_file(const char *path, uint8_t **buf, size_t *len)
{
	int r = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > MB_MAX_IMAGE) {
		r = S_ISDIR(st.st_mode) ? -EISDIR : -ENOEXEC;
		goto out;
	}
	*len = (size_t)st.st_size;
	*buf = malloc(*len ? *len : 1);
	if (!*buf) {
		r = -ENOMEM;
		goto out;
	}
	size_t got = 0;
	while (got < *len) {
		ssize_t n = read(fd, *buf + got, *len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			free(*buf);
			*buf = NULL;
			goto out;
		}
		got += (size_t)n;
	}
out:
	close(fd);
	return r;
}

/* Finds the header in the first 8 KiB (32-bit aligned) and copies it out;
 * the address fields past the end of the file read as zero. */
static int find_header(const uint8_t *img, size_t len, size_t *off, struct mb_header *h)
{
	size_t lim = len < MB_SEARCH ? len : MB_SEARCH;
	for (size_t o = 0; o + 12 <= lim; o += 4) {
		uint32_t w[3];
		memcpy(w, img + o, sizeof(w));
		if (w[0] == MB_MAGIC && (uint32_t)(w[0] + w[1] + w[2]) == 0) {
			size_t n = len - o < sizeof(*h) ? len - o : sizeof(*h);
			memset(h, 0, sizeof(*h));
			memcpy(h, img + o, n);
			*off = o;
			return 0;
		}
	}
	return -ENOEXEC;
}

/* The loader's region must not be overwritten by the image. */
static bool hits_loader(uint64_t addr, uint64_t len)
{
	return addr < LOADER_END && addr + len > INFO_ADDR;
}

static int load_elf(struct lm_vm *vm, const uint8_t *img, size_t len, uint32_t *entry)
{
	Elf32_Ehdr eh;
	if (len < sizeof(eh))
		return -ENOEXEC;
	memcpy(&eh, img, sizeof(eh));
	if (eh.e_ident[EI_CLASS] != ELFCLASS32 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh.e_machine != EM_386 || eh.e_phentsize < sizeof(Elf32_Phdr))
		return -ENOEXEC;
	if (eh.e_phoff > len || (uint64_t)eh.e_phnum * eh.e_phentsize > len - eh.e_phoff)
		return -ENOEXEC;
	unsigned loaded = 0;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf32_Phdr ph;
		memcpy(&ph, img + eh.e_phoff + (size_t)i * eh.e_phentsize, sizeof(ph));
		if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
			continue;
		if (ph.p_filesz > ph.p_memsz || ph.p_offset > len ||
		    ph.p_filesz > len - ph.p_offset)
			return -ENOEXEC;
		if (hits_loader(ph.p_paddr, ph.p_memsz))
			return -E2BIG;
		if (!lm_vm_gpa_to_host(vm, ph.p_paddr, ph.p_memsz))
			return -E2BIG;
		int r = lm_vm_write_guest(vm, ph.p_paddr, img + ph.p_offset, ph.p_filesz);
		if (r < 0)
			return r;
		/* RAM starts zeroed; the bss needs no writes. */
		lm__balloon_set_image_end(vm, (uint64_t)ph.p_paddr + ph.p_memsz);
		loaded++;
	}
	if (!loaded)
		return -ENOEXEC;
	*entry = eh.e_entry;
	return 0;
}

static int load_aout(struct lm_vm *vm, const uint8_t *img, size_t len, size_t hoff,
		     const struct mb_header *h, uint32_t *entry)
{
	if (hoff + sizeof(*h) > len)
		return -ENOEXEC;
	if (h->header_addr < h->load_addr || h->header_addr - h->load_addr > hoff)
		return -ENOEXEC;
	size_t foff = hoff - (h->header_addr - h->load_addr);
	uint64_t end = h->load_end_addr ? h->load_end_addr : h->load_addr + (len - foff);
	if (end < h->load_addr || end - h->load_addr > len - foff)
		return -ENOEXEC;
	uint64_t bss_end = h->bss_end_addr > end ? h->bss_end_addr : end;
	if (hits_loader(h->load_addr, bss_end - h->load_addr))
		return -E2BIG;
	if (!lm_vm_gpa_to_host(vm, h->load_addr, bss_end - h->load_addr))
		return -E2BIG;
	*entry = h->entry_addr;
	lm__balloon_set_image_end(vm, bss_end);
	return lm_vm_write_guest(vm, h->load_addr, img + foff, end - h->load_addr);
}

static int write_info(struct lm_vm *vm, const char *cmdline)
{
	static const char name[] = "livemig";
	uint64_t low = vm->ram_size < LM_VM_HOLE_START ? vm->ram_size : LM_VM_HOLE_START;
	uint64_t high = vm->ram_size - low;
	struct mb_mmap_entry map[4];
	unsigned n = 0;
	map[n++] = (struct mb_mmap_entry){20, 0, 0x9fc00, 1};
	map[n++] = (struct mb_mmap_entry){20, 0x9fc00, 0x100000 - 0x9fc00, 2};
	if (low > 0x100000)
		map[n++] = (struct mb_mmap_entry){20, 0x100000, low - 0x100000, 1};
	if (high)
		map[n++] = (struct mb_mmap_entry){20, LM_VM_HOLE_END, high, 1};

	struct mb_info info;
	memset(&info, 0, sizeof(info));
	info.flags = (1u << 0) | (1u << 2) | (1u << 6) | (1u << 9);
	info.mem_lower = 639;
	info.mem_upper = (uint32_t)((low - 0x100000) >> 10);
	info.cmdline = CMDLINE_ADDR;
	info.mmap_length = (uint32_t)(n * sizeof(map[0]));
	info.mmap_addr = MMAP_ADDR;
	info.boot_loader_name = NAME_ADDR;

	size_t clen = cmdline ? strlen(cmdline) : 0;
	_Static_assert(LM_VM_CMDLINE_MAX + 1 == CMDLINE_MAX, "the public limit is the loader's");
	if (clen > LM_VM_CMDLINE_MAX)
		return -E2BIG;
	int r;
	if ((r = lm_vm_write_guest(vm, INFO_ADDR, &info, sizeof(info))) < 0 ||
	    (r = lm_vm_write_guest(vm, MMAP_ADDR, map, n * sizeof(map[0]))) < 0 ||
	    (r = lm_vm_write_guest(vm, NAME_ADDR, name, sizeof(name))) < 0 ||
	    (r = lm_vm_write_guest(vm, CMDLINE_ADDR, cmdline ? cmdline : "", clen + 1)) < 0)
		return r;
	return 0;
}

static void flat(struct kvm_segment *s, uint16_t sel, uint8_t type)
{
	memset(s, 0, sizeof(*s));
	s->base = 0;
	s->limit = 0xffffffffu;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->dpl = 0;
	s->db = 1;
	s->s = 1;
	s->g = 1;
}

static int set_entry_state(struct lm_vm *vm, uint32_t entry)
{
	int fd = vm->vcpus[0].fd;
	struct kvm_sregs sregs;
	if (ioctl(fd, KVM_GET_SREGS, &sregs) < 0)
		return -errno;
	flat(&sregs.cs, 0x08, 0x0b);
	flat(&sregs.ds, 0x10, 0x03);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.cr0 = 0x11; /* PE, ET; paging off */
	sregs.cr4 = 0;
	sregs.efer = 0;
	if (ioctl(fd, KVM_SET_SREGS, &sregs) < 0)
		return -errno;
	struct kvm_regs regs;
	memset(&regs, 0, sizeof(regs));
	regs.rip = entry;
	regs.rax = MB_BOOT_MAGIC;
	regs.rbx = INFO_ADDR;
	regs.rflags = 0x2;
	if (ioctl(fd, KVM_SET_REGS, &regs) < 0)
		return -errno;
	return 0;
}

int lm__multiboot_load(struct lm_vm *vm, const char *path, const char *cmdline)
{
	uint8_t *img = NULL;
	size_t len = 0;
	int r = read_file(path, &img, &len);
	if (r < 0)
		return r;
	size_t hoff = 0;
	struct mb_header h;
	uint32_t entry = 0;
	if ((r = find_header(img, len, &hoff, &h)) < 0)
		goto out;
	bool is_elf = len >= SELFMAG && memcmp(img, ELFMAG, SELFMAG) == 0;
	uint32_t flags = h.flags;
	if (is_elf && !(flags & MB_FLAG_AOUT_KLUDGE))
		r = load_elf(vm, img, len, &entry);
	else if (flags & MB_FLAG_AOUT_KLUDGE)
		r = load_aout(vm, img, len, hoff, &h, &entry);
	else
		r = -ENOEXEC;
	if (r < 0)
		goto out;
	if ((r = write_info(vm, cmdline)) < 0)
		goto out;
	r = set_entry_state(vm, entry);
out:
	free(img);
	return r;
}
