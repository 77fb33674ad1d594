"""The processes of a multi-host run meet over plain TCP before JAX joins them.

`jax.distributed.initialize` turns a coordinator that never answers, or a peer that never
comes, into a C++ check failure (SIGABRT with a stack, after `initialization_timeout`): no
Python exception can be caught. So `host_flags.start` first runs this meeting on the
coordinator's port, with the same timeout: process 0 listens there, every other process
connects (retrying until the coordinator is up) and sends its id, and process 0 answers
"go" once all N-1 have come, or names the missing ones at the deadline. Either way each
process knows, in time, whether JAX's own start can succeed, and a failure is one
`HostsMissingError` line naming the coordinator address and the process ids.

Process 0 hands the port to JAX's coordination service right after: it waits for the peers
to close their end first, so that no connection of its own lingers on the port (TIME_WAIT).
"""

import socket
import time

GO = b"go\n"
RETRY_S = 0.25  # Between connection attempts while process 0 is not listening yet.
ANSWER_GRACE_S = 5.0  # Beyond the timeout, how long a process waits for process 0's answer.


class HostsMissingError(ConnectionError):
  """The coordinator or a peer did not come within the initialization timeout."""


def _split(address: str) -> tuple[str, int]:
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise ValueError(f"--coordinator_address {address!r}: expected host:port")
  return host.strip("[]"), int(port)


def meet(address: str, num_processes: int, process_id: int, timeout_s: float) -> None:
  """Returns once all `num_processes` processes have met at `address` (module docstring);
  HostsMissingError naming who did not come within `timeout_s` seconds."""
  host, port = _split(address)
  if process_id == 0:
    _host(port, num_processes, address, timeout_s)
  else:
    _join(host, port, num_processes, process_id, address, timeout_s)


def _host(port: int, num_processes: int, address: str, timeout_s: float) -> None:
  """Process 0: listens until every other process has said its id, then says go."""
  deadline = time.monotonic() + timeout_s
  peers: dict[int, socket.socket] = {}
  dual = socket.has_dualstack_ipv6()  # IPv4 and IPv6 addresses, as JAX's service listens.
  with socket.create_server(("", port), family=socket.AF_INET6 if dual else socket.AF_INET,
                            dualstack_ipv6=dual) as server:
    while len(peers) < num_processes - 1 and (left := deadline - time.monotonic()) > 0:
      server.settimeout(left)
      try:
        peer, _ = server.accept()
      except TimeoutError:
        break
      peer.settimeout(max(deadline - time.monotonic(), 0.1))
      try:
        said = peer.recv(64).split()
      except OSError:
        said = []
      if (len(said) == 1 and said[0].isdigit() and 0 < int(said[0]) < num_processes
          and int(said[0]) not in peers):
        peers[int(said[0])] = peer
      else:  # Not an af_jax process, or an id already taken: it gets no go.
        peer.close()
  missing = sorted(set(range(1, num_processes)) - set(peers))
  reply = GO if not missing else f"missing {','.join(map(str, missing))}\n".encode()
  for peer in peers.values():
    with peer:
      _say_and_wait_for_close(peer, reply)
  if missing:
    raise HostsMissingError(
        f"process 0 of {num_processes} at {address}: process(es) "
        f"{', '.join(map(str, missing))} did not come within {timeout_s:g} s; start every "
        "process with the same --coordinator_address and --num_processes, or raise "
        "--initialization_timeout")


def _say_and_wait_for_close(peer: socket.socket, reply: bytes) -> None:
  try:
    peer.sendall(reply)
    peer.settimeout(5)
    peer.recv(1)  # The peer closes first (module docstring).
  except OSError:
    pass


def _join(host: str, port: int, num_processes: int, process_id: int, address: str,
          timeout_s: float) -> None:
  """Process `process_id` > 0: connects to process 0 (retrying), says its id, awaits go."""
  deadline = time.monotonic() + timeout_s
  who = f"process {process_id} of {num_processes}"
  while True:
    try:
      connection = socket.create_connection(
          (host, port), timeout=max(deadline - time.monotonic(), 0.1))
      break
    except OSError as e:
      if time.monotonic() + RETRY_S >= deadline:
        raise HostsMissingError(
            f"{who}: no coordinator (process 0) answered at {address} within {timeout_s:g} s "
            f"({e.strerror or e}); start process 0 with --coordinator_address {address}, "
            "check the address, or raise --initialization_timeout") from None
      time.sleep(RETRY_S)
  with connection:
    # Process 0 waits for the others at most as long as this one does, from before now, then
    # answers; the grace lets its answer (who is missing) through on a loaded machine.
    connection.settimeout(timeout_s + ANSWER_GRACE_S)
    try:
      connection.sendall(f"{process_id}\n".encode())
      reply = connection.recv(64)
    except OSError:
      reply = b""
  if reply != GO:
    missing = reply.decode(errors="replace").strip().removeprefix("missing ")
    raise HostsMissingError(
        f"{who}: the coordinator (process 0) at {address} gave up: process(es) "
        f"{missing.replace(',', ', ') or 'of the run'} did not come within {timeout_s:g} s; "
        "start every process with the same --coordinator_address and --num_processes, or "
        "raise --initialization_timeout")
