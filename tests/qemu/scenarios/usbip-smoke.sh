#!/bin/sh
# tests/qemu/scenarios/usbip-smoke.sh — runs inside the harness guest (busybox
# sh; init has loaded configfs, libcomposite, usb_f_acm, dummy_hcd, vhci_hcd,
# usbip_host and cdc_acm, in that order, and started systemd-udevd).
#
# Proves, asserting each, the kernel and udev facts the devsieve agent relies
# on: a CDC-ACM gadget (1a86:7523, serial DS-TEST-1) on dummy_hcd is a real USB
# device; usbipd exports it on loopback; `usbip attach` makes it appear under
# /sys/devices/platform/vhci_hcd.0/ with the same ids and serial and a ttyACM
# node whose bytes reach the gadget's /dev/ttyGS0 (and back); vhci's status
# files before/after; `usbip detach` removes it; the server side unbinding an
# attached device; unplug/replug through the gadget's UDC file seen by udev.
# Prints the time of each step. Usage: tests/qemu/boot OUT scenarios/usbip-smoke.sh SHARE
# Conditions for wait_for are single-quoted on purpose (evaluated each poll);
# sysfs paths and tty names here never hold spaces.
# shellcheck disable=SC2016,SC2086,SC2012,SC2011,SC3040 # busybox ash has pipefail
set -eu -o pipefail

VID=1a86 PID=7523 SERIAL=DS-TEST-1
G=/sys/kernel/config/usb_gadget/devsieve
VHCI=/sys/devices/platform/vhci_hcd.0
LOG=${HARNESS_SHARE:-/tmp}/usbip-smoke

mkdir -p "$LOG"
now() { read -r u _ </proc/uptime; echo "$u"; }
T_START=$(now)
T_STEP=$T_START
step() {
  t=$(now)
  printf '[smoke %7.2fs | step %5.2fs] %s\n' "$(echo "$t $T_START" | awk '{print $1-$2}')" \
    "$(echo "$t $T_STEP" | awk '{print $1-$2}')" "$*"
  T_STEP=$t
}
since() { echo "$(now) $1" | awk '{printf "%.2f", $1-$2}'; }
fail() {
  echo "SMOKE FAIL: $*"
  echo "---- dmesg (tail) ----"
  dmesg | tail -n 30
  exit 1
}
# wait_for SECONDS 'shell condition': polls every 20 ms.
wait_for() {
  limit=$1
  shift
  deadline=$(echo "$(now) $limit" | awk '{print $1+$2}')
  while ! eval "$1"; do
    if [ "$(echo "$(now) $deadline" | awk '{print ($1 > $2)}')" = 1 ]; then return 1; fi
    usleep 20000
  done
}
expect_eq() { [ "$2" = "$3" ] || fail "$1: expected '$3', got '$2'"; }
show_status() {
  echo "---- $1: $VHCI/status ----"
  cat "$VHCI/status"
  echo "---- $1: $VHCI/status.1 ----"
  cat "$VHCI/status.1"
}
# watch_port PORT FILE: appends each change of PORT's line in vhci's status
# to FILE, with the time; run in the background, kill when done. Pure shell
# (no fork per sample), every 5 ms.
watch_port() {
  want=$(printf %04d "$1")
  last=
  while :; do
    line=
    while read -r hub port rest; do
      if [ "$port" = "$want" ]; then line="$hub $port $rest"; break; fi
    done <"$VHCI/status"
    if [ "$line" != "$last" ]; then
      read -r u _ </proc/uptime
      echo "$u $line" >>"$2"
      last=$line
    fi
    usleep 5000
  done
}
# vhci port lines (all controllers) whose state is not 004 (free).
busy_ports() { awk 'FNR > 1 && $3 != "004"' "$VHCI/status" "$VHCI"/status.*; }
all_ports_free() { [ -z "$(busy_ports)" ]; }
# The USB device (not interface) directories under a path.
usb_devices_under() { for d in "$@"; do [ -f "$d/idVendor" ] && echo "$d"; done; true; }
# tty names under a USB device's interfaces.
ttys_of() { ls "$1"/*:*/tty 2>/dev/null || true; }

step "start (kernel $(uname -r))"
[ -d /sys/devices/platform/dummy_hcd.0/usb1 ] ||
  fail "dummy_hcd's root hub is not usb1 (was dummy_hcd loaded before vhci_hcd?): $(ls /sys/devices/platform/dummy_hcd.0)"
[ -d "$VHCI" ] || fail "$VHCI missing: vhci_hcd not loaded"
echo "vhci_hcd.0 buses: $(ls -d "$VHCI"/usb* | xargs -n1 basename | tr '\n' ' ')nports=$(cat "$VHCI/nports")"
echo "vhci controllers: $(ls -d /sys/devices/platform/vhci_hcd.* | xargs -n1 basename | tr '\n' ' ')"
step "checked dummy_hcd (usb1) and vhci_hcd"

# ---- 1. the gadget -------------------------------------------------------------
UDC=$(ls /sys/class/udc | head -n 1)
[ -n "$UDC" ] || fail "no UDC in /sys/class/udc"
mkdir "$G"
echo 0x$VID >"$G/idVendor"
echo 0x$PID >"$G/idProduct"
echo 0x0200 >"$G/bcdUSB"
echo 0x0100 >"$G/bcdDevice"
mkdir "$G/strings/0x409"
echo "$SERIAL" >"$G/strings/0x409/serialnumber"
echo "devsieve" >"$G/strings/0x409/manufacturer"
echo "devsieve test CDC-ACM" >"$G/strings/0x409/product"
mkdir "$G/configs/c.1"
echo 100 >"$G/configs/c.1/MaxPower"
mkdir "$G/functions/acm.usb0"
ln -s "$G/functions/acm.usb0" "$G/configs/c.1/"
T_PLUG=$(now)
echo "$UDC" >"$G/UDC"
step "gadget created on $UDC"

GADGET_DEV=/sys/devices/platform/dummy_hcd.0/usb1/1-1
wait_for 10 '[ -f $GADGET_DEV/serial ]' || fail "$GADGET_DEV did not appear after writing $UDC to UDC"
expect_eq "1-1 idVendor" "$(cat $GADGET_DEV/idVendor)" $VID
expect_eq "1-1 idProduct" "$(cat $GADGET_DEV/idProduct)" $PID
expect_eq "1-1 serial" "$(cat $GADGET_DEV/serial)" $SERIAL
wait_for 10 '[ -n "$(ttys_of $GADGET_DEV)" ] && [ -c /dev/ttyGS0 ]' ||
  fail "no ttyACM for 1-1 or no /dev/ttyGS0 (cdc_acm: $(ls /sys/bus/usb/drivers/cdc_acm 2>&1 | tr '\n' ' '))"
LOCAL_TTY=$(ttys_of $GADGET_DEV)
wait_for 10 '[ -c /dev/$LOCAL_TTY ]' || fail "/dev/$LOCAL_TTY missing"
step "gadget is USB device 1-1 $(cat $GADGET_DEV/idVendor):$(cat $GADGET_DEV/idProduct) serial $(cat $GADGET_DEV/serial), /dev/$LOCAL_TTY and /dev/ttyGS0 ($(since "$T_PLUG")s after plug)"
echo "1-1 busnum=$(cat $GADGET_DEV/busnum) devnum=$(cat $GADGET_DEV/devnum) speed=$(cat $GADGET_DEV/speed)"

# A udev monitor for everything that follows (kernel side and udev side).
udevadm monitor --kernel --udev --subsystem-match=usb --subsystem-match=tty >"$LOG/udev-monitor.log" 2>&1 &
MONITOR=$!
usleep 300000

# ---- 2. export it over USB/IP on loopback --------------------------------------
usbipd -D
wait_for 10 'netstat -ltn 2>/dev/null | grep -q ":3240 "' || fail "usbipd is not listening on :3240"
step "usbipd -D listening on :3240"
usbip list -l | tee "$LOG/list-local.txt"
grep -q "busid 1-1 ($VID:$PID)" "$LOG/list-local.txt" || fail "usbip list -l does not show 1-1 ($VID:$PID)"
step "usbip list -l shows 1-1"
usbip bind -b 1-1
[ -e /sys/bus/usb/drivers/usbip-host/1-1 ] || fail "1-1 is not bound to usbip-host after usbip bind"
step "usbip bind -b 1-1 (local /dev/$LOCAL_TTY now $( [ -e /dev/$LOCAL_TTY ] && echo present || echo gone))"
usbip list -r 127.0.0.1 | tee "$LOG/list-remote.txt"
grep -q "1-1: .*($VID:$PID)" "$LOG/list-remote.txt" || fail "usbip list -r 127.0.0.1 does not show 1-1 ($VID:$PID)"
step "usbip list -r 127.0.0.1 shows 1-1"

# ---- 3. attach through vhci_hcd --------------------------------------------------
show_status "before attach"
T_ATTACH=$(now)
usbip attach -r 127.0.0.1 -b 1-1 || fail "usbip attach -r 127.0.0.1 -b 1-1 failed"
step "usbip attach returned"
wait_for 10 '[ -n "$(usb_devices_under $VHCI/usb*/[0-9]*-[0-9]*)" ]' || fail "no device under $VHCI/usb*/ after attach"
VDEV=$(usb_devices_under $VHCI/usb*/[0-9]*-[0-9]* | head -n 1)
T_SYSFS=$(since "$T_ATTACH")
wait_for 10 '[ -f $VDEV/serial ]' || fail "$VDEV has no serial"
expect_eq "$VDEV idVendor" "$(cat $VDEV/idVendor)" $VID
expect_eq "$VDEV idProduct" "$(cat $VDEV/idProduct)" $PID
expect_eq "$VDEV serial" "$(cat $VDEV/serial)" $SERIAL
wait_for 10 '[ -n "$(ttys_of $VDEV)" ]' || fail "no tty under $VDEV after attach"
VTTY=$(ttys_of $VDEV)
T_TTYSYS=$(since "$T_ATTACH")
wait_for 10 '[ -c /dev/$VTTY ]' || fail "/dev/$VTTY did not appear"
T_TTYDEV=$(since "$T_ATTACH")
udevadm settle --timeout=10
T_SETTLED=$(since "$T_ATTACH")
step "attached: $VDEV $(cat $VDEV/idVendor):$(cat $VDEV/idProduct) serial $(cat $VDEV/serial) -> /dev/$VTTY"
echo "after attach: sysfs device +${T_SYSFS}s, tty in sysfs +${T_TTYSYS}s, /dev/$VTTY +${T_TTYDEV}s, udev settled +${T_SETTLED}s"
VBUS=$(cat $VDEV/busnum)
VDEVNUM=$(cat $VDEV/devnum)
echo "vhci device: busid $(basename $VDEV) busnum=$VBUS devnum=$VDEVNUM speed=$(cat $VDEV/speed) devpath=$(cat $VDEV/devpath)"
show_status "after attach"
PORT_LINE=$(busy_ports | head -n 1)
[ -n "$PORT_LINE" ] || fail "no used port (sta 006) in vhci status after attach"
PORT=$(echo "$PORT_LINE" | awk '{print $2 + 0}')
echo "used port line: $PORT_LINE (port $PORT)"
expect_eq "status local_busid" "$(echo "$PORT_LINE" | awk '{print $7}')" "$(basename $VDEV)"
usbip port | tee "$LOG/port.txt"
BBB=$(printf %03d "$VBUS")
DDD=$(printf %03d "$VDEVNUM")
echo "/dev/bus/usb: $(find /dev/bus/usb -type c | sort | tr '\n' ' ')"
[ -c /dev/bus/usb/$BBB/$DDD ] || fail "/dev/bus/usb/$BBB/$DDD missing for the vhci device"
echo "/dev/serial/by-id: $(ls -l /dev/serial/by-id 2>/dev/null | awk 'NR > 1 {print $9, $10, $11}' | tr '\n' ';')"
udevadm info "/dev/$VTTY" >"$LOG/udevadm-info-tty.txt"
grep -E 'E: (ID_VENDOR_ID|ID_MODEL_ID|ID_SERIAL_SHORT|ID_SERIAL|ID_PATH|ID_PATH_TAG|DEVLINKS|ID_USB_DRIVER|MAJOR|MINOR)=' "$LOG/udevadm-info-tty.txt" || true
grep -q "E: ID_SERIAL_SHORT=$SERIAL" "$LOG/udevadm-info-tty.txt" || fail "udev has no ID_SERIAL_SHORT=$SERIAL for /dev/$VTTY"
step "vhci status, /dev/bus/usb/$BBB/$DDD and udev's view checked"

# ---- 4. bytes through ttyACM (vhci) <-> ttyGS0 (gadget) --------------------------
stty -F /dev/ttyGS0 raw -echo
stty -F "/dev/$VTTY" raw -echo
cat /dev/ttyGS0 >"$LOG/gs0.rx" &
READER=$!
usleep 200000
MSG="devsieve-over-usbip-$$"
T_IO=$(now)
printf '%s\n' "$MSG" >"/dev/$VTTY"
wait_for 10 'grep -q "$MSG" "$LOG/gs0.rx"' || fail "bytes written on /dev/$VTTY did not arrive on /dev/ttyGS0 (got: $(cat "$LOG/gs0.rx"))"
kill $READER 2>/dev/null || true
wait $READER 2>/dev/null || true
step "ttyACM -> ttyGS0: '$MSG' arrived ($(since "$T_IO")s)"
cat "/dev/$VTTY" >"$LOG/acm.rx" &
READER=$!
usleep 200000
printf '%s\n' "reply-$MSG" >/dev/ttyGS0
wait_for 10 'grep -q "reply-$MSG" "$LOG/acm.rx"' || fail "bytes written on /dev/ttyGS0 did not arrive on /dev/$VTTY"
kill $READER 2>/dev/null || true
wait $READER 2>/dev/null || true
step "ttyGS0 -> ttyACM: 'reply-$MSG' arrived"

# ---- 5. detach -------------------------------------------------------------------
: >"$LOG/port-during-detach.txt"
watch_port "$PORT" "$LOG/port-during-detach.txt" &
WATCH=$!
usleep 100000
T_DETACH=$(now)
usbip detach -p "$PORT" || fail "usbip detach -p $PORT failed"
wait_for 10 '[ ! -e $VDEV ]' || fail "$VDEV still present after detach"
T_GONE=$(since "$T_DETACH")
wait_for 10 '[ ! -e /dev/$VTTY ]' || fail "/dev/$VTTY still present after detach"
step "usbip detach -p $PORT: $VDEV gone +${T_GONE}s, /dev/$VTTY gone +$(since "$T_DETACH")s"
wait_for 10 'all_ports_free' || fail "a vhci port is not free (sta 004) after detach: $(busy_ports)"
usleep 100000
kill $WATCH 2>/dev/null || true
echo "port $PORT during detach (detach written at $T_DETACH):"
sed 's/^/  /' "$LOG/port-during-detach.txt"
show_status "after detach"
[ -e /sys/bus/usb/drivers/usbip-host/1-1 ] || fail "1-1 is no longer bound to usbip-host after the client detached"
step "all vhci ports free again; 1-1 still exported by usbip-host"

# ---- 6. the server side unbinds while attached -----------------------------------
usbip attach -r 127.0.0.1 -b 1-1 || fail "second usbip attach failed"
wait_for 10 '[ -n "$(usb_devices_under $VHCI/usb*/[0-9]*-[0-9]*)" ]' || fail "no device under $VHCI after the second attach"
VDEV2=$(usb_devices_under $VHCI/usb*/[0-9]*-[0-9]* | head -n 1)
wait_for 10 '[ -n "$(ttys_of $VDEV2)" ] && [ -c /dev/$(ttys_of $VDEV2) ]' || fail "no tty after the second attach"
udevadm settle --timeout=10
step "attached again: $VDEV2 /dev/$(ttys_of $VDEV2)"
PORT2=$(busy_ports | awk '{print $2 + 0; exit}')
kill "$(pidof usbipd)" || fail "cannot stop usbipd"
wait_for 5 '[ -z "$(pidof usbipd)" ]' || fail "usbipd did not exit"
usleep 500000
[ -e "$VDEV2" ] || fail "$VDEV2 vanished when usbipd exited"
stty -F "/dev/$(ttys_of $VDEV2)" raw -echo
cat /dev/ttyGS0 >"$LOG/gs0-2.rx" &
READER=$!
usleep 200000
printf 'after-usbipd-exit\n' >"/dev/$(ttys_of $VDEV2)"
wait_for 10 'grep -q after-usbipd-exit "$LOG/gs0-2.rx"' || fail "no bytes through the attached device after usbipd exited"
kill $READER 2>/dev/null || true
wait $READER 2>/dev/null || true
step "usbipd exited: the attached device stays and still passes bytes (the kernel holds the connection)"
busy_ports | sed 's/^/used before unbind: /' || true
: >"$LOG/port-during-unbind.txt"
watch_port "$PORT2" "$LOG/port-during-unbind.txt" &
WATCH=$!
usleep 100000
T_UNBIND=$(now)
usbip unbind -b 1-1 || fail "usbip unbind -b 1-1 failed"
wait_for 10 '[ ! -e $VDEV2 ]' || fail "$VDEV2 still present 10 s after the server unbound 1-1"
T_UGONE=$(since "$T_UNBIND")
wait_for 10 'all_ports_free' || fail "vhci port not freed after the server unbound: $(busy_ports)"
step "server unbind: $VDEV2 gone +${T_UGONE}s, port free +$(since "$T_UNBIND")s"
usleep 100000
kill $WATCH 2>/dev/null || true
echo "port $PORT2 during the server's unbind (unbind run at $T_UNBIND):"
sed 's/^/  /' "$LOG/port-during-unbind.txt"
show_status "after the server unbound 1-1"
dmesg | grep -iE 'vhci|usbip' | tail -n 8 | sed 's/^/dmesg: /' || true
wait_for 10 '[ -n "$(ttys_of $GADGET_DEV)" ]' || fail "1-1 did not get its local ttyACM back after usbip unbind"
step "1-1 back on its local driver: /dev/$(ttys_of $GADGET_DEV)"

# ---- 7. unplug / replug through the gadget's UDC file ----------------------------
: >"$LOG/replug-monitor.log"
udevadm monitor --udev --subsystem-match=usb >"$LOG/replug-monitor.log" 2>&1 &
REPLUG_MONITOR=$!
usleep 300000
T_UNPLUG=$(now)
echo "" >"$G/UDC"
wait_for 10 '[ ! -e $GADGET_DEV ]' || fail "$GADGET_DEV still present after writing '' to UDC"
step "unplugged (UDC=''): 1-1 gone from sysfs +$(since "$T_UNPLUG")s"
T_REPLUG=$(now)
echo "$UDC" >"$G/UDC"
wait_for 10 '[ -f $GADGET_DEV/serial ]' || fail "$GADGET_DEV did not come back after writing $UDC to UDC"
expect_eq "replugged serial" "$(cat $GADGET_DEV/serial)" $SERIAL
udevadm settle --timeout=10
step "replugged (UDC=$UDC): 1-1 back +$(since "$T_REPLUG")s"
wait_for 5 'grep -q "add .*/usb1/1-1 (usb)" "$LOG/replug-monitor.log"' || true
kill $REPLUG_MONITOR 2>/dev/null || true
echo "---- udevadm monitor --udev (unplug/replug) ----"
cat "$LOG/replug-monitor.log"
grep -qE 'UDEV .*remove +/devices/platform/dummy_hcd.0/usb1/1-1 \(usb\)' "$LOG/replug-monitor.log" ||
  fail "udev did not report remove of /devices/platform/dummy_hcd.0/usb1/1-1"
grep -qE 'UDEV .*add +/devices/platform/dummy_hcd.0/usb1/1-1 \(usb\)' "$LOG/replug-monitor.log" ||
  fail "udev did not report add of /devices/platform/dummy_hcd.0/usb1/1-1"
step "udev reported remove and add of 1-1"

kill $MONITOR 2>/dev/null || true
echo "---- udevadm monitor, whole scenario, vhci devices and ttys ($LOG/udev-monitor.log) ----"
grep 'vhci' "$LOG/udev-monitor.log" | grep -Ev ':1\.[0-9]+ \(usb\)' || true
step "SMOKE PASSED"
