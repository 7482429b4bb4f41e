#!/bin/sh
# tests/qemu/scenarios/agent.sh — the devsieve agent against the real kernel
# (runs inside the harness guest; boot it with QEMU_APPEND=dummy_hcd.num=2).
#
# Two CDC-ACM gadgets on dummy_hcd: "remote" (1a86:7523, serial DS-TEST-1,
# busid 1-1), exported by usbipd on loopback, and "local" (1a86:55d4, serial
# DS-TEST-2), left to the local kernel. Then devsieve-qemu-driver runs the
# agent with the kubelet simulator and checks listing, attach through
# vhci_hcd, bytes through the attached tty, release, and hotplug (see
# tests/qemu/src/main.rs). Its exit status is the scenario's.
# shellcheck disable=SC3040 # busybox ash has pipefail
set -eu -o pipefail

CONFIGFS=/sys/kernel/config/usb_gadget
now() { read -r u _ </proc/uptime; echo "$u"; }
fail() { echo "AGENT SCENARIO FAIL: $*"; dmesg | tail -n 30; exit 1; }

# gadget NAME UDC VID PID SERIAL
gadget() {
  g=$CONFIGFS/$1
  mkdir "$g"
  echo "0x$3" >"$g/idVendor"
  echo "0x$4" >"$g/idProduct"
  echo 0x0200 >"$g/bcdUSB"
  mkdir "$g/strings/0x409"
  echo "$5" >"$g/strings/0x409/serialnumber"
  echo devsieve >"$g/strings/0x409/manufacturer"
  mkdir "$g/configs/c.1"
  mkdir "$g/functions/acm.usb0"
  ln -s "$g/functions/acm.usb0" "$g/configs/c.1/"
  echo "$2" >"$g/UDC"
}

[ -e /sys/class/udc/dummy_udc.1 ] || fail "two UDCs needed: boot with QEMU_APPEND=dummy_hcd.num=2"
gadget remote dummy_udc.0 1a86 7523 DS-TEST-1
gadget local dummy_udc.1 1a86 55d4 DS-TEST-2
i=0
until [ -f /sys/bus/usb/devices/1-1/serial ]; do
  i=$((i + 1)); [ $i -lt 200 ] || fail "the remote gadget 1-1 did not appear"; usleep 50000
done
udevadm settle --timeout=20
echo "[agent $(now)s] gadgets plugged: $(ls /sys/bus/usb/devices | tr '\n' ' ')"

usbipd -D
usbip bind -b 1-1 || fail "usbip bind -b 1-1"
i=0
until usbip list -r 127.0.0.1 2>/dev/null | grep -q '1-1:'; do
  i=$((i + 1)); [ $i -lt 100 ] || fail "usbipd does not list 1-1"; usleep 50000
done
echo "[agent $(now)s] 1-1 exported by usbipd"

/usr/local/bin/devsieve-qemu-driver /usr/local/bin/devsieve /tmp/devsieve dummy_udc.1 "$CONFIGFS/local"
