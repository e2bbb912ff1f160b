// A WCF calculator service (System.ServiceModel ServiceHost), one instance of several: it picks a
// free port, listens at http://127.0.0.1:PORT/Services/CalculatorService.svc (GET ?wsdl answers
// its WSDL), registers that address with the router's SOAP registration endpoint through a WCF
// ChannelFactory<IRegistrationService>, and when its standard input closes (or on Ctrl-C)
// unregisters and closes.
// Usage: mono wcf_service.exe basic|soap12-wsa NAMESPACE INSTANCE_ID REGISTRATION_URL
// Prints "listening ADDRESS", "registered", one line per call (what the request said about
// where it was sent: the HTTP URL and the WS-Addressing To), and "unregistered".
using System;
using System.Collections.Generic;
using System.Net;
using System.Net.Sockets;
using System.ServiceModel;
using System.ServiceModel.Channels;
using System.ServiceModel.Description;
using System.Threading;
using System.Xml.Schema;
using Wsdl = System.Web.Services.Description;

namespace Interop
{
    [ServiceBehavior(InstanceContextMode = InstanceContextMode.Single, ConcurrencyMode = ConcurrencyMode.Multiple)]
    public class CalculatorService : ICalculator
    {
        readonly string id;

        public CalculatorService(string id)
        {
            this.id = id;
        }

        public int Add(int a, int b)
        {
            Seen("Add");
            return a + b;
        }

        public string Instance()
        {
            Seen("Instance");
            return id;
        }

        void Seen(string operation)
        {
            MessageHeaders headers = OperationContext.Current.IncomingMessageHeaders;
            Uri via = OperationContext.Current.IncomingMessageProperties.Via;
            string to = headers.MessageVersion.Addressing == AddressingVersion.None ? "none" : (headers.To == null ? "absent" : headers.To.ToString());
            Console.WriteLine("call {0} at {1} To {2}", operation, via, to);
        }
    }

    public static class ServiceProgram
    {
        public static int Main(string[] args)
        {
            if (args.Length != 4)
            {
                Console.Error.WriteLine("usage: wcf_service.exe basic|soap12-wsa NAMESPACE INSTANCE_ID REGISTRATION_URL");
                return 2;
            }
            // The host's listener takes thread-pool threads as it opens; Mono adds threads to the
            // pool slowly, so the registration call right after would wait seconds for one.
            ThreadPool.SetMinThreads(16, 16);
            string bindingName = args[0], ns = args[1], id = args[2], registrationUrl = args[3];
            Binding binding = OnLoopbackOnly(Contracts.BindingNamed(bindingName));
            string address = "http://127.0.0.1:" + FreePort() + "/Services/CalculatorService.svc";

            var host = new ServiceHost(new CalculatorService(id), new Uri(address));
            ServiceEndpoint endpoint = host.AddServiceEndpoint(typeof(ICalculator), binding, "");
            Contracts.Retarget(endpoint.Contract, ns, true);
            host.Description.Behaviors.Add(new ServiceMetadataBehavior { HttpGetEnabled = true });
            host.Open();
            RepairMetadata(host);
            Console.WriteLine("listening " + address);

            var info = new RegistrationInfo { Address = address, ContractName = endpoint.Contract.Name, ContractNamespace = ns };
            var registrar = new ChannelFactory<IRegistrationService>(Contracts.BindingNamed(bindingName), new EndpointAddress(registrationUrl));
            IRegistrationService registration = registrar.CreateChannel();
            registration.Register(info);
            Console.WriteLine("registered");

            var closing = new ManualResetEvent(false);
            Console.CancelKeyPress += (sender, e) => { e.Cancel = true; closing.Set(); };
            new Thread(() => { while (Console.In.ReadLine() != null) { } closing.Set(); }) { IsBackground = true }.Start();
            closing.WaitOne();

            registration.Unregister(info);
            Console.WriteLine("unregistered");
            // What follows only releases this process's own resources. Mono can hang in a close
            // (a channel's default close timeout is a minute, and a host waits on a connection
            // its listener still holds), so each step is bounded, and a watchdog ends the process
            // if the whole shutdown is stuck, saying at which step.
            string step = "closing the registration channel";
            new Thread(() =>
            {
                Thread.Sleep(TimeSpan.FromSeconds(10));
                Console.WriteLine("watchdog: shutdown stuck at " + step + "; exiting");
                Environment.Exit(0);
            }) { IsBackground = true }.Start();
            try
            {
                ((IClientChannel)registration).Close(TimeSpan.FromSeconds(3));
            }
            catch (Exception)
            {
                ((IClientChannel)registration).Abort();
            }
            step = "closing the host";
            try
            {
                host.Close(TimeSpan.FromSeconds(5));
            }
            catch (Exception)
            {
                step = "aborting the host";
                host.Abort();
            }
            step = "exiting";
            Environment.Exit(0);
            return 0;
        }

        // Mono's WSDL export has two defects that no client gets past: the types section imports
        // the XML Schema namespace itself (at "?xsd=", which answers an HTML page), and a SOAP 1.2
        // binding is written with SOAP 1.1's binding and address elements (its operations are
        // SOAP 1.2's). Both are put right in the metadata before the first GET ?wsdl is answered.
        static void RepairMetadata(ServiceHost host)
        {
            var extension = host.Extensions.Find<ServiceMetadataExtension>();
            foreach (MetadataSection section in extension.Metadata.MetadataSections)
            {
                var wsdl = section.Metadata as Wsdl.ServiceDescription;
                if (wsdl == null)
                    continue;
                foreach (XmlSchema schema in wsdl.Types.Schemas)
                {
                    var bogus = new List<XmlSchemaObject>();
                    foreach (XmlSchemaObject include in schema.Includes)
                    {
                        var import = include as XmlSchemaImport;
                        if (import != null && import.Namespace == XmlSchema.Namespace)
                            bogus.Add(import);
                    }
                    foreach (XmlSchemaObject import in bogus)
                        schema.Includes.Remove(import);
                }
                foreach (Wsdl.Binding binding in wsdl.Bindings)
                {
                    bool soap12 = false;
                    foreach (Wsdl.OperationBinding operation in binding.Operations)
                        soap12 |= operation.Extensions.Find(typeof(Wsdl.Soap12OperationBinding)) != null;
                    var soap11 = binding.Extensions.Find(typeof(Wsdl.SoapBinding)) as Wsdl.SoapBinding;
                    if (!soap12 || soap11 == null || soap11 is Wsdl.Soap12Binding)
                        continue;
                    binding.Extensions.Remove(soap11);
                    binding.Extensions.Add(new Wsdl.Soap12Binding { Transport = soap11.Transport, Style = soap11.Style });
                    foreach (Wsdl.Service service in wsdl.Services)
                        foreach (Wsdl.Port port in service.Ports)
                        {
                            var address = port.Extensions.Find(typeof(Wsdl.SoapAddressBinding)) as Wsdl.SoapAddressBinding;
                            if (port.Binding.Name != binding.Name || address == null || address is Wsdl.Soap12AddressBinding)
                                continue;
                            port.Extensions.Remove(address);
                            port.Extensions.Add(new Wsdl.Soap12AddressBinding { Location = address.Location });
                        }
                }
            }
        }

        // WCF listens on every interface by default; the host name of its address is the only
        // one this service answers on.
        static Binding OnLoopbackOnly(Binding binding)
        {
            var basic = binding as BasicHttpBinding;
            if (basic != null)
                basic.HostNameComparisonMode = HostNameComparisonMode.Exact;
            var custom = binding as CustomBinding;
            if (custom != null)
                custom.Elements.Find<HttpTransportBindingElement>().HostNameComparisonMode = HostNameComparisonMode.Exact;
            return binding;
        }

        static int FreePort()
        {
            var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            int port = ((IPEndPoint)listener.LocalEndpoint).Port;
            listener.Stop();
            return port;
        }
    }
}
