# unused: the interop test writes its revision files itself
