"""Where live Stats come from: async I/O behind one seam, `poll() -> Poll`.

redis.py    the only Redis I/O: asyncio-redis' protocol on qwatch's own transport
            (TLS, ACL, timeouts), SCAN/MGET of the records, the sampler lock
resp.py     pure: Redis reply parsing
"""
