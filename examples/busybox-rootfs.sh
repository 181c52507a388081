#!/bin/sh
# Makes a minimal root filesystem in DIR: Debian's static busybox and one symlink per
# applet (sh, echo, sleep, ls, cat, wget, httpd, ...). Enough to run the examples.
# Usage: examples/busybox-rootfs.sh DIR
set -eu
dir=${1:?usage: $0 DIR}
busybox=/bin/busybox
# ldd fails on a static binary: that is the one we want (a dynamic one would need libc inside).
if [ ! -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
  echo "error: no static $busybox: install Debian's busybox-static (apt-get install busybox-static)" >&2
  exit 1
fi
mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp" "$dir/proc" "$dir/sys" "$dir/dev" "$dir/root"
cp "$busybox" "$dir/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$dir/etc/passwd"
echo 'root:x:0:' > "$dir/etc/group"
