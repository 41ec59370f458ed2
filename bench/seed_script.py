"""The seed document's test script ("Running a test with the service account", in
testing-jupyterhub-deployments), copied faithfully for the benchmark. Only its three parameters
come from the environment instead of being edited in: BENCH_HUB_URL, BENCH_TOKEN, BENCH_USER.
Everything else — the 5 s polling, the prints, the DELETE that does not wait — is the seed's.
"""
import os
import time

import requests

jupyterhub_url = os.environ["BENCH_HUB_URL"].rstrip("/")
api_token = os.environ["BENCH_TOKEN"]
username = os.environ["BENCH_USER"]

headers = {"Authorization": f"token {api_token}"}

# Custom user options for the spawner
user_options = {
    "reservation": [""],
    "account": ["test-group"],
    "runtime": ["00:05:00"]
}


def start_server(username, options=None):
    """Starts a JupyterHub server for the given user with custom options."""
    url = f"{jupyterhub_url}/hub/api/users/{username}/server"

    # User options are passed like this
    # data = {
    #     "user_options": options or {}
    # }
    # but in firecrestspawner they are updated to the  subvars
    # too late for that work in the the way we do it here.
    # We need to pass them directly like this
    data = options

    response = requests.post(url, headers=headers, json=data)

    if response.status_code in [201, 202]:
        print(f"* Server spawn request sent for {username} with options.")
    else:
        print(f"* Failed to start server: {response.text}")
        return False
    return True


def check_server_status(username, timeout=60):
    """Waits until the server is up or times out."""
    url = f"{jupyterhub_url}/hub/api/users/{username}"

    for _ in range(timeout // 5):
        response = requests.get(url, headers=headers).json()
        if response.get("server"):
            print(f"* Server is running at {response['server']}")
            return True
        print("* Waiting for server to start...")
        time.sleep(5)

    print("* Server did not start within timeout.")
    return False


def stop_server(username):
    """Stops the JupyterHub server for the given user."""
    url = f"{jupyterhub_url}/hub/api/users/{username}/server"
    response = requests.delete(url, headers=headers)

    if response.status_code == 204:
        print(f"* Server stopped for {username}.")
    else:
        print(f"* Failed to stop server: {response.text}")


if start_server(username, options=user_options):
    if check_server_status(username):
        stop_server(username)
