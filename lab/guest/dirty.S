/* Memory-dirtying boot sector: switches to 32-bit protected mode and keeps
 * writing one dword into every 4 KiB page between 4 MiB and 100 MiB, printing
 * "HB <n>\r\n" on COM1 after every pass. Its dirty rate is far above what
 * a throttled link can copy, so a live migration does not converge unless
 * the guest is slowed (auto-converge) or switched to post-copy. Needs >= 128 MiB. */
        .set DELAY, 20000
        .code16
        .section .text
        .global _start
_start:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %ss
        movw    $0x7c00, %sp
        /* enable A20 (fast A20 gate) */
        inb     $0x92, %al
        orb     $2, %al
        andb    $0xfe, %al
        outb    %al, $0x92
        lgdt    gdt_desc
        movl    %cr0, %eax
        orl     $1, %eax
        movl    %eax, %cr0
        ljmp    $0x08, $pm32

        .code32
pm32:
        movw    $0x10, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movl    $0x7c00, %esp
        xorl    %edi, %edi              /* heartbeat counter */
        xorl    %ebx, %ebx              /* pass counter */
pass:
        movl    $0x00400000, %esi
1:      addl    %ebx, (%esi)
        movl    $DELAY, %ecx            /* pace the writes: ~1 pass/s at full speed */
5:      loop    5b
        addl    $4096, %esi
        cmpl    $0x06400000, %esi
        jb      1b
        incl    %ebx
        movb    $'H', %al
        call    putc
        movb    $'B', %al
        call    putc
        movb    $' ', %al
        call    putc
        movl    %edi, %eax
        call    putdec
        movb    $'\r', %al
        call    putc
        movb    $'\n', %al
        call    putc
        incl    %edi
        jmp     pass

putdec:
        pushl   %ebx
        movl    $10, %ecx
        xorl    %ebx, %ebx
2:      xorl    %edx, %edx
        divl    %ecx
        pushl   %edx
        incl    %ebx
        testl   %eax, %eax
        jnz     2b
3:      popl    %eax
        addb    $'0', %al
        call    putc
        decl    %ebx
        jnz     3b
        popl    %ebx
        ret

putc:
        movb    %al, %ah
        movw    $0x3fd, %dx
4:      inb     %dx, %al
        testb   $0x20, %al
        jz      4b
        movb    %ah, %al
        movw    $0x3f8, %dx
        outb    %al, %dx
        ret

        .p2align 3
gdt:    .quad   0
        .quad   0x00cf9a000000ffff      /* code 0x08: base 0, 4 GiB, 32-bit */
        .quad   0x00cf92000000ffff      /* data 0x10 */
gdt_desc:
        .word   gdt_desc - gdt - 1
        .long   gdt
        .org 510
        .byte 0x55, 0xaa
