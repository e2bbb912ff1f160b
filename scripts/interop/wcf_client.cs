// Calls a calculator with a WCF client: a ChannelFactory<ICalculator> on the given binding and
// address, WCF's defaults otherwise (the action {namespace}/ICalculator/{operation}).
// Usage: mono wcf_client.exe basic|soap12-wsa ADDRESS NAMESPACE qualified|unqualified A B [INSTANCE_CALLS]
// INSTANCE_CALLS (a WCF service): calls Instance() that many times first and prints
// "instance: ID" for each answer. Then calls Add(A, B) and prints the sum. A fault as the answer
// prints "fault: FaultException code=... subcode=... reason=..." (another communication error:
// "fault: TYPE: message") and exits with status 3, so that the matrix tells it from a crash.
using System;
using System.ServiceModel;
using System.ServiceModel.Description;

namespace Interop
{
    public static class ClientProgram
    {
        const int FaultExit = 3;

        public static int Main(string[] args)
        {
            if (args.Length != 6 && args.Length != 7)
            {
                Console.Error.WriteLine("usage: wcf_client.exe basic|soap12-wsa ADDRESS NAMESPACE qualified|unqualified A B [INSTANCE_CALLS]");
                return 2;
            }
            ContractDescription contract = ContractDescription.GetContract(typeof(ICalculator));
            Contracts.Retarget(contract, args[2], args[3] == "qualified");
            var factory = new ChannelFactory<ICalculator>(new ServiceEndpoint(contract, Contracts.BindingNamed(args[0]), new EndpointAddress(args[1])));
            int a = int.Parse(args[4]), b = int.Parse(args[5]);
            int instanceCalls = args.Length == 7 ? int.Parse(args[6]) : 0;
            ICalculator calculator = factory.CreateChannel();
            try
            {
                for (int i = 0; i < instanceCalls; i++)
                    Console.WriteLine("instance: " + calculator.Instance());
                Console.WriteLine(calculator.Add(a, b));
            }
            catch (FaultException fault)
            {
                Console.WriteLine("fault: " + Contracts.Describe(fault));
                return FaultExit;
            }
            catch (CommunicationException error)
            {
                Console.WriteLine("fault: " + error.GetType().Name + ": " + error.Message.Replace("\n", " "));
                return FaultExit;
            }
            ((IClientChannel)calculator).Close();
            return 0;
        }
    }
}
