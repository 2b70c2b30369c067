import socket, struct, random, sys, threading
port=int(sys.argv[1]); seed=int(sys.argv[2]); nconn=int(sys.argv[3])
def run(k, errs):
    rnd=random.Random(seed*1000+k)
    blob=bytearray()
    for i in range(3000):
        r=rnd.random()
        n = 0 if r<0.2 else rnd.randint(1,16) if r<0.6 else rnd.randint(1,5000) if r<0.97 else rnd.randint(0,65536)
        blob += struct.pack(">I", n) + bytes(rnd.getrandbits(8) for _ in range(min(n,64))) * (n//64) + bytes(n % 64) if n>=64 else struct.pack(">I", n) + bytes(rnd.getrandbits(8) for _ in range(n))
    s=socket.create_connection(("127.0.0.1",port))
    def send():
        # odd write sizes
        off=0
        while off<len(blob):
            m=rnd.randint(1,9000); s.sendall(blob[off:off+m]); off+=m
        s.shutdown(socket.SHUT_WR)
    t=threading.Thread(target=send); t.start()
    got=bytearray()
    while True:
        d=s.recv(1<<16)
        if not d: break
        got+=d
    t.join()
    if got!=blob: errs.append((k,len(got),len(blob)))
errs=[]
ts=[threading.Thread(target=run,args=(k,errs)) for k in range(nconn)]
[t.start() for t in ts]; [t.join() for t in ts]
print("errors", errs); sys.exit(1 if errs else 0)
