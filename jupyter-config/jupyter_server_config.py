"""The course's JupyterLab settings: `make lab` and Binder (binder/start) put this folder on JUPYTER_CONFIG_PATH.

They apply to this course's server only; a JupyterLab started elsewhere is unchanged. Tested by
tests/test_lab_config.py, which starts a server with exactly this folder.
"""

import os
from jupyter_core.paths import jupyter_runtime_dir

c = get_config()  # noqa: F821  (traitlets provides it to config files)

# One kernel, "Python (sustainlab)": the launcher would also list "Python 3 (ipykernel)", the same environment
# under a second name.
c.KernelSpecManager.ensure_native_kernel = False
c.KernelSpecManager.allowed_kernelspecs = {"sustainlab"}
c.MappingKernelManager.default_kernel_name = "sustainlab"

# Local kernels over IPC (Unix-domain sockets), as sustainlab.runner.kernel_config does for run-all: over TCP each
# kernel start prints "Kernel is running over TCP without encryption". The server names each kernel's sockets
# after its connection file in the runtime folder; a Unix socket path has a limit of about 100 bytes, so a very deep
# runtime folder keeps TCP. Windows has no ZeroMQ IPC.
_LONGEST_SOCKET = len(os.path.abspath(jupyter_runtime_dir())) + len("/kernel-00000000-0000-0000-0000-000000000000-ipc-99")
if os.name == "posix" and _LONGEST_SOCKET < 100:
    c.KernelManager.transport = "ipc"

# No news feed and no update check: nothing fetched from the network. The first-start "get notified about
# official Jupyter news?" question is a setting's default: labconfig/default_setting_overrides.json answers it.
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
