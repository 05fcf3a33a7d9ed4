/* Heartbeat boot sector: prints "HB <n>\r\n" on COM1 every 100 ms, forever.
 * Real mode, BIOS int 15h/86h for the wait; the counter is 32-bit so it stays
 * continuous across a live migration (a reboot would restart it at 0). */
        .code16
        .section .text
        .global _start
_start:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    $0x7c00, %sp
        sti
        /* COM1: 115200 8N1, FIFO on */
        movw    $0x3fb, %dx
        movb    $0x80, %al
        outb    %al, %dx
        movw    $0x3f8, %dx
        movb    $1, %al
        outb    %al, %dx
        movw    $0x3f9, %dx
        xorb    %al, %al
        outb    %al, %dx
        movw    $0x3fb, %dx
        movb    $0x03, %al
        outb    %al, %dx
        movw    $0x3fa, %dx
        movb    $0xc7, %al
        outb    %al, %dx
beat:
        movb    $'H', %al
        call    putc
        movb    $'B', %al
        call    putc
        movb    $' ', %al
        call    putc
        movl    counter, %eax
        call    putdec
        movb    $'\r', %al
        call    putc
        movb    $'\n', %al
        call    putc
        incl    counter
        /* wait 100000 us: CX:DX = 0x0001:0x86a0 */
        movb    $0x86, %ah
        movw    $0x0001, %cx
        movw    $0x86a0, %dx
        int     $0x15
        jmp     beat

/* print EAX as unsigned decimal */
putdec:
        movl    $10, %ecx
        xorw    %bx, %bx
1:      xorl    %edx, %edx
        divl    %ecx
        pushw   %dx
        incw    %bx
        testl   %eax, %eax
        jnz     1b
2:      popw    %ax
        addb    $'0', %al
        call    putc
        decw    %bx
        jnz     2b
        ret

/* write AL to COM1, waiting for the transmitter */
putc:
        pushw   %dx
        pushw   %ax
        movw    $0x3fd, %dx
3:      inb     %dx, %al
        testb   $0x20, %al
        jz      3b
        popw    %ax
        movw    $0x3f8, %dx
        outb    %al, %dx
        popw    %dx
        ret

counter: .long 0
        .org 510
        .byte 0x55, 0xaa
